"""kexec-upgrade.yml on a host booted with lockdown=integrity, the target kernel unsigned.

Under lockdown the kernel refuses kexec_load outright and kexec_file_load of an image it cannot
verify (in a BIOS VM it has no platform keyring at all: LAB-FACTS.md), so the load fails. With
kexec_upgrade_fallback=fail the host is failed with the loader's reason and not rebooted; with
fallback=cold it is rebooted through the firmware and the result says why kexec was refused.
The VM runs without -no-reboot so that the cold reboot can come back; QEMU's firmware then boots
its -kernel (6.1.0-54) again, as a server's boot loader would boot its default entry, and the role
says that this is not the target.
"""

import os

from .test_upgrade_playbook import run, state

from tests.kernels import kernel_package

OLD, NEW = "6.1.0-54-amd64", "6.1.0-56-amd64"


def releases(tmp_path):
    """The target release, as the mixed-fleet test gives it: in the x86_64 group's vars."""
    path = tmp_path / "releases.yml"
    path.write_text("lab_x86_64:\n  vars:\n    kexec_upgrade_release: %s\n" % NEW)
    return path


def test_lockdown_refuses_kexec_then_fail_stops_and_cold_reboots(fleet_factory, tmp_path):
    fleet = fleet_factory("lockdown", hosts=1, append="lockdown=integrity", no_reboot=False)
    vm = fleet.vms[0]
    assert "[integrity]" in fleet.run(vm.name, "cat /sys/kernel/security/lockdown")[1]
    # The target becomes Debian's -unsigned build of the same kernel.
    unsigned = kernel_package(NEW, unsigned=True).vmlinuz
    fleet.put_file(vm.name, unsigned, "/boot/vmlinuz-" + NEW)
    release, boot_id, loaded = state(fleet)[vm.name]
    assert (release, loaded) == (OLD, "0")

    rc, out, rows = run(fleet, tmp_path, releases(tmp_path), "-e", "kexec_upgrade_fallback=fail")
    row = rows[vm.name]
    assert rc != 0 and row["status"] == "failed", out
    assert "kexec_load failed" in row["msg"] and "keeps running %s" % OLD in row["msg"], row["msg"]
    assert "lockdown" in row["msg"].lower(), row["msg"]  # the loader says what refused it
    assert state(fleet)[vm.name] == (OLD, boot_id, "0")  # not rebooted, nothing loaded

    console_mark = os.path.getsize(vm.serial_log)
    rc, out, rows = run(fleet, tmp_path, releases(tmp_path), "-e", "kexec_upgrade_fallback=cold")
    row = rows[vm.name]
    print("lockdown, fallback cold:", row)
    assert row["method"] == "cold", out
    assert "kexec_load refused the target" in (row.get("reason") or row["msg"]), row
    new_release, new_boot_id, loaded = state(fleet)[vm.name]
    assert new_boot_id != boot_id and loaded == "0"
    with open(vm.serial_log, "rb") as f:
        f.seek(console_mark)
        console = f.read().decode("utf-8", "replace")
    assert "reboot: Restarting system" in console and "kexec_core: Starting new kernel" not in console
    # The lab's firmware boots 6.1.0-54 again: the role must not call that an upgrade.
    assert new_release == OLD
    assert rc != 0 and row["status"] == "failed"
    assert "boot loader's default" in row["msg"], row["msg"]
