"""The fleetboot lab: Debian VMs under QEMU (TCG) where a real kexec can run.

`python -m lab up --hosts 3` builds (or reuses) a cached Debian bookworm image, boots VMs on
copy-on-write overlays with `-no-reboot`, waits for SSH and writes an Ansible inventory.
Not shipped in the collection: it is the project's test fleet.
"""
