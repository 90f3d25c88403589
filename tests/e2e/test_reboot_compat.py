"""A playbook written for ansible.builtin.reboot runs unchanged with fleetboot.kexec.kexec_reboot.

One lab VM (-no-reboot): fleetboot.kexec.kexec_load loads 6.1.0-56, then the playbook below, as
a user of ansible.builtin.reboot wrote it (msg, reboot_timeout, test_command), runs with nothing
but the module name switched. It must jump by kexec (same QEMU process), come back on the new
kernel, and the msg must reach a logged-in user's terminal, as wall does.
"""

import json
import os
import subprocess
import textwrap
import threading

from lab.ssh import _client  # the lab's own paramiko login to its VMs

from .conftest import BIN, REPO

COLLECTIONS = os.path.join(REPO, ".build", "collections")
OLD_KERNEL = "6.1.0-54-amd64"
NEW_KERNEL = "6.1.0-56-amd64"
MSG = "fleetboot compat check: rebooting into the new kernel"

# What a user of ansible.builtin.reboot has today; the test only changes the module name.
BUILTIN_PLAYBOOK = textwrap.dedent("""\
    - hosts: lab
      become: true
      gather_facts: false
      tasks:
        - name: Reboot into the new kernel
          ansible.builtin.reboot:
            msg: "%s"
            reboot_timeout: 600
            test_command: uname -r
          register: rebooted

        - name: Keep the result on the controller
          ansible.builtin.copy:
            content: "{{ rebooted | to_json }}"
            dest: "{{ result_dir }}/{{ inventory_hostname }}.json"
            mode: "0644"
          delegate_to: localhost
          become: false
    """) % MSG

LOAD_PLAYBOOK = textwrap.dedent("""\
    - hosts: lab
      become: true
      gather_facts: false
      tasks:
        - name: Load the new kernel with the running command line
          fleetboot.kexec.kexec_load:
            kernel: /boot/vmlinuz-%(k)s
            initrd: /boot/initrd.img-%(k)s
            reuse_cmdline: true
    """) % {"k": NEW_KERNEL}


def ansible_playbook(fleet, path, *extra):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCALHOST_WARNING="False")
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", fleet.inventory, str(path)] + list(extra)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=900, env=env, check=False, cwd=REPO)


class Terminal:
    """A logged-in user: an interactive SSH session with a pty (sshd records it in utmp, which
    is where wall finds its terminals), read in the background until the host goes away."""

    def __init__(self, fleet, vm):
        self.client = _client(vm.port, fleet.key_file, timeout=30)
        self.channel = self.client.invoke_shell()
        self.channel.settimeout(1.0)
        self.seen = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.stop.is_set():
            try:
                data = self.channel.recv(4096)
            except Exception:  # pylint: disable=broad-except  # timeouts, and the host going down
                continue
            if not data:
                return
            self.seen += data

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.client.close()
        return self.seen.decode("utf-8", "replace")


def test_builtin_reboot_playbook_runs_unchanged_with_kexec_reboot(fleet_factory, tmp_path):
    fleet = fleet_factory("compat", hosts=1)
    vm = fleet.vms[0]
    identity = (vm.pid, vm.start_time)
    rc, before, err = fleet.run(vm.name, "cat /proc/sys/kernel/random/boot_id; uname -r")
    assert rc == 0, err
    before_boot_id, release = before.split()
    assert release == OLD_KERNEL

    load = tmp_path / "load.yml"
    load.write_text(LOAD_PLAYBOOK)
    proc = ansible_playbook(fleet, load)
    assert proc.returncode == 0, proc.stdout
    assert fleet.run(vm.name, "cat /sys/kernel/kexec_loaded")[1].strip() == "1"

    switched = BUILTIN_PLAYBOOK.replace("ansible.builtin.reboot:", "fleetboot.kexec.kexec_reboot:")
    assert switched != BUILTIN_PLAYBOOK
    assert [a for a, b in zip(BUILTIN_PLAYBOOK.splitlines(), switched.splitlines()) if a != b] == \
        ["      ansible.builtin.reboot:"]
    book = tmp_path / "reboot.yml"
    book.write_text(switched)
    result_dir = tmp_path / "results"
    result_dir.mkdir()

    terminal = Terminal(fleet, vm)
    try:
        who = fleet.run(vm.name, "who")[1]
        assert "pts/" in who, "the interactive session is not a logged-in user: %r" % who
        proc = ansible_playbook(fleet, book, "-e", "result_dir=%s" % result_dir)
    finally:
        seen = terminal.close()
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout
    res = json.loads((result_dir / ("%s.json" % vm.name)).read_text())
    print("kexec_reboot as ansible.builtin.reboot:", json.dumps(res, sort_keys=True))

    assert res["rebooted"] is True and res["changed"] is True and not res.get("failed")
    assert res["method"] == "kexec"
    assert (res["old_release"], res["new_release"]) == (OLD_KERNEL, NEW_KERNEL)
    assert res["old_boot_id"] == before_boot_id != res["new_boot_id"]
    assert res["announced"] is True
    assert MSG in seen, "the logged-in terminal did not get msg; it saw: %r" % seen[-2000:]
    # The host answers on the new kernel, from the same QEMU process (-no-reboot: a firmware reset
    # would have ended it), and test_command ran there.
    rc, after, err = fleet.run(vm.name, "cat /proc/sys/kernel/random/boot_id; uname -r")
    assert after.split() == [res["new_boot_id"], NEW_KERNEL]
    assert vm.running() and (vm.pid, vm.start_time) == identity, vm.exit_reason()
    assert fleet.firmware_resets() == []
