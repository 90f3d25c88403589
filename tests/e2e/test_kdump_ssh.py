"""kdump to a dump server over SSH, on two lab VMs booted together: vm1 crashes, vm2 is the dump
server. QEMU user networking lets vm1 reach vm2's SSH at 10.0.2.2:<vm2's forwarded port> (the
controller's loopback, where vm2's port is forwarded), so that is kdump_ssh_server/kdump_ssh_port
for vm1, while the role reaches vm2 as inventory host vm2 (kdump_ssh_server_host).

Both VMs boot with crashkernel=256M on QEMU's command line, so the firmware reboot after each
capture keeps the reservation and no kexec reboot is needed: two boots, one role run, two crashes.

1. The role (defaults but the target): makedumpfile installed on both, the receiver and the dump
   directory on vm2, vm1's new key in vm2's authorized_keys restricted to the receiver (a shell
   command with that key is refused), the connection checked with the capture's own options.
2. A CPU taken offline and back: the udev rule reloads the crash kernel (6.1 has no crash_hotplug).
3. sysrq crash through the role (kdump_test): the dump and dmesg.txt complete on vm2, filtered and
   compressed (5x below the RAM), read by makedumpfile there; nothing on vm1 but captures.log.
4. vm2 powered off, vm1 crashed again: the capture kernel cannot reach the server, says so on its
   console, and saves the dump locally; vm2 booted again holds nothing of that second dump.
"""

import json
import os
import re
import subprocess
import textwrap
import time

import pytest

from .conftest import BIN, REPO
from .kdump_flow import COLLECTIONS, crash_region, recap, system_ram_outside, union

SERVER_PATH = "/srv/crash"
CRASH_PLAY = textwrap.dedent("""\
    - hosts: vm1
      gather_facts: false
      become: true
      tasks:
        - name: Crash the host and wait for its vmcore
          fleetboot.kexec.kdump_crash:
            timeout: 1500
          register: crash
        - name: Save the result on the controller
          ansible.builtin.copy:
            content: "{{ crash | to_json }}"
            dest: "{{ out }}"
            mode: "0644"
          delegate_to: localhost
          become: false
    """)


@pytest.fixture(scope="module")
def fleet(fleet_factory):
    return fleet_factory("kdump-ssh", hosts=2, memory=2048, cpus=2, append="crashkernel=256M", no_reboot=False)


def run(fleet, vm, command, timeout=180):
    rc, out, err = fleet.run(vm, command, timeout=timeout)
    assert rc == 0, (vm, command, out, err)
    return out


def ansible_playbook(fleet, *args, timeout=2400):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="False")
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", fleet.inventory] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=timeout, env=env, check=False, cwd=REPO)
    return proc.returncode, proc.stdout


def server_dumps(fleet):
    return run(fleet, "vm2", "ls -A %s" % SERVER_PATH).split()


def test_kdump_to_a_dump_server_and_the_fallback_when_it_is_down(fleet, tmp_path):
    port = fleet.vm("vm2").port
    role = [os.path.join(REPO, "kdump.yml"), "--limit", "vm1", "-e", "kdump_target=ssh", "-e", "kdump_ssh_server=10.0.2.2",
            "-e", "kdump_ssh_port=%d" % port, "-e", "kdump_ssh_server_host=vm2", "-e", "kdump_ssh_path=%s" % SERVER_PATH,
            "-e", "kdump_ssh_wait=30"]
    iomem = run(fleet, "vm1", "cat /proc/iomem")
    ram = sum(e - s for s, e in union(system_ram_outside(iomem, crash_region(iomem))))

    # 1. The role.
    rc, out = ansible_playbook(fleet, *role)
    assert rc == 0, out
    assert re.search(r"dumps by makedumpfile 1\.\d+\.\d+ \(-d 31,\s+(lzo|zstd)\) to root@10\.0\.2\.2:%s" % SERVER_PATH, out), out
    for vm in ("vm1", "vm2"):
        assert run(fleet, vm, "command -v makedumpfile").strip() == "/usr/bin/makedumpfile", vm
    keys = run(fleet, "vm2", "cat /root/.ssh/authorized_keys")
    pub = run(fleet, "vm1", "cat /etc/fleetboot/kdump_id_ed25519.pub").split()[1]
    line = [k for k in keys.splitlines() if pub in k]
    assert len(line) == 1 and line[0].startswith(
        'restrict,command="python3 /usr/lib/fleetboot-kexec/receiver/receive.py --dest %s --keep 3" ssh-ed25519 ' % SERVER_PATH), keys
    # The key runs the receiver and nothing else.
    ssh = ("ssh -T -p %d -i /etc/fleetboot/kdump_id_ed25519 -o BatchMode=yes -o UserKnownHostsFile=/etc/fleetboot/kdump-known-hosts "
           "-o StrictHostKeyChecking=yes root@10.0.2.2" % port)
    rc, said, err = fleet.run("vm1", ssh + " 'cat /etc/shadow'")
    assert rc == 1 and said == "" and "refused: this key may only send kdump dumps" in err, (rc, said, err)
    assert json.loads(run(fleet, "vm1", ssh + " check"))["dest"] == SERVER_PATH
    rc, out = ansible_playbook(fleet, *role)
    assert rc == 0 and recap(out)["changed"] == 0, out

    # 2. CPU hotplug: the udev rule reloads the crash kernel (Debian's 6.1 has no crash_hotplug).
    assert run(fleet, "vm1", "cat /sys/devices/system/cpu/crash_hotplug 2>/dev/null || echo none").strip() == "none"
    loads = "journalctl -b -u fleetboot-kdump-load.service --no-pager | grep -c 'kind crash  entry' || true"
    before = int(run(fleet, "vm1", loads))
    run(fleet, "vm1", "echo 0 > /sys/devices/system/cpu/cpu1/online; sleep 1; echo 1 > /sys/devices/system/cpu/cpu1/online")
    reloaded = run(fleet, "vm1", "for i in $(seq 60); do n=$(%s); [ $n -gt %d ] && break; sleep 2; done; echo $n; "
                                 "cat /sys/kernel/kexec_crash_loaded" % (loads, before), timeout=200).split()
    # offline and online arrive within the 3 s pause: merged into one reload, or two at most.
    assert before + 1 <= int(reloaded[0]) <= before + 2 and reloaded[1] == "1", (before, reloaded)

    # 3. A crash with the server up: the dump goes there.
    rc, out = ansible_playbook(fleet, *(role + ["-e", "kdump_test=true"]))
    assert rc == 0, out
    assert re.search(r"vm1 crashed and saved %s/vm1-[0-9:-]+/vmcore on root@10\.0\.2\.2:%d" % (SERVER_PATH, port), out), out
    dumps = server_dumps(fleet)
    assert len(dumps) == 1 and re.match(r"^vm1-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d$", dumps[0]), dumps
    remote = "%s/%s" % (SERVER_PATH, dumps[0])
    assert sorted(run(fleet, "vm2", "ls %s" % remote).split()) == ["capture-dmesg.txt", "dmesg.txt", "vmcore"]
    size = int(run(fleet, "vm2", "stat -c %%s %s/vmcore" % remote))
    assert run(fleet, "vm2", "head -c 8 %s/vmcore" % remote) == "KDUMP   "
    assert size * 5 <= ram, (size, ram)
    assert "sysrq: Trigger a crash" in run(fleet, "vm2", "cat %s/dmesg.txt" % remote)
    reread = run(fleet, "vm2", "makedumpfile --dump-dmesg %s/vmcore /tmp/reread.txt >/dev/null && cat /tmp/reread.txt" % remote,
                 timeout=300)
    assert "sysrq: Trigger a crash" in reread
    assert run(fleet, "vm1", "ls -A /var/crash").split() == ["captures.log"]  # nothing else on the host
    sent = json.loads(run(fleet, "vm1", "tail -n 1 /var/crash/captures.log"))
    assert sent["target"] == "ssh" and sent["path"] == remote and sent["rebuilt_by"] == "makedumpfile -R", sent
    print("kdump ssh: dump %d bytes on vm2 for %d bytes of RAM (%.1fx), capture %.1f s, memory %s"
          % (size, ram, ram / float(size), sent["seconds"], sent.get("memory")))

    # 4. The server down at crash time: the dump stays on vm1, and the console says why.
    run(fleet, "vm2", "systemd-run --on-active=1 systemctl poweroff")
    vm2 = fleet.vm("vm2")
    for dummy in range(120):
        if not vm2.running():
            break
        time.sleep(1)
    assert not vm2.running(), "vm2 did not power off"
    play = tmp_path / "crash.yml"
    play.write_text(CRASH_PLAY)
    result_file = tmp_path / "crash.json"
    rc, out = ansible_playbook(fleet, str(play), "-e", "out=%s" % result_file)
    assert rc == 0, out
    crash = json.loads(result_file.read_text())
    assert crash["target"] == "local" and "Connection refused" in crash["remote_error"], crash
    local = crash["dump_dir"]
    assert re.match(r"^/var/crash/\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d$", local), local
    assert sorted(run(fleet, "vm1", "ls -A /var/crash").split()) == sorted(["captures.log", os.path.basename(local)])
    assert sorted(run(fleet, "vm1", "ls %s" % local).split()) == ["capture-dmesg.txt", "dmesg.txt", "vmcore"]
    with open(fleet.vm("vm1").serial_log, "rb") as f:
        console = f.read().decode("utf-8", "replace")
    assert re.search(r"fleetboot-kdump: dump server root@10\.0\.2\.2:%d: ssh exited 255: .*Connection refused.*; "
                     r"saving the dump locally under /var/crash instead" % port, console), console[-3000:]
    vm2.start(die_with_parent=True)
    fleet.boot_id("vm2", timeout=600)
    assert server_dumps(fleet) == dumps  # nothing of the second dump, complete or not, on the server
    print("kdump ssh fallback: %s, %s bytes, back %.1f s after the panic"
          % (crash["vmcore"], crash["vmcore_size"], crash["elapsed"]))
