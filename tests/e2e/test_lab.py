"""The lab is real: Debian VMs that Ansible reaches through the generated inventory."""

import os
import re
import time

from lab.image import BOOT_KERNEL
from lab.vm import _proc_start_time

from .conftest import ansible


def test_fleet_answers_ansible_on_the_older_kernel(lab_fleet):
    pids = {vm.name: (vm.pid, vm.start_time) for vm in lab_fleet.vms}
    assert len(pids) == 2

    ping = ansible(lab_fleet, "all", "-m", "ping")
    assert ping.returncode == 0, ping.stdout
    for name in pids:
        assert re.search(r"^%s \| SUCCESS" % name, ping.stdout, re.M), ping.stdout
        assert '"ping": "pong"' in ping.stdout

    uname = ansible(lab_fleet, "all", "-m", "command", "-a", "uname -r")
    assert uname.returncode == 0, uname.stdout
    releases = dict(re.findall(r"^(\S+) \| CHANGED \| rc=0 >>\n(\S+)$", uname.stdout, re.M))
    assert releases == {name: BOOT_KERNEL for name in pids}, uname.stdout

    # The image's zip-import bytecode cache (lab/recipe/lab_zip_bytecode.py) holds what the module
    # runs compiled, and a module run of sources already seen compiles nothing new.
    count = "ls /var/cache/lab-zip-bytecode | wc -l"
    before = lab_fleet.run(lab_fleet.vms[0].name, count)
    assert before[0] == 0 and int(before[1]) > 10, before
    assert ansible(lab_fleet, "vm1", "-m", "command", "-a", "uname -r").returncode == 0
    assert lab_fleet.run(lab_fleet.vms[0].name, count)[1] == before[1]

    # The first boot came through the lab's small initramfs (lab/initramfs.py), not initramfs-tools,
    # and without a login on the serial console (its generator is masked: nobody can type there).
    for vm in lab_fleet.vms:
        with open(vm.serial_log, "rb") as f:
            console = f.read().decode("utf-8", "replace")
        assert "fleetboot lab initramfs: %s" % BOOT_KERNEL in console and "Loading, please wait" not in console
    logins = lab_fleet.run(lab_fleet.vms[0].name, "systemctl list-units --no-legend 'serial-getty@*' 'getty@*' | wc -l")
    assert logins[0] == 0 and logins[1].strip() == "0", logins

    # The same QEMU processes still run: nothing was reset behind our back.
    for vm in lab_fleet.vms:
        assert vm.running(), vm.exit_reason()
        assert (vm.pid, vm.start_time) == pids[vm.name]
    assert lab_fleet.firmware_resets() == []


def test_firmware_reset_is_reported_and_down_leaves_no_qemu_behind(fleet_factory):
    fleet = fleet_factory("reset", hosts=1)
    vm = fleet.vms[0]
    assert _proc_start_time(vm.pid) is not None
    rc, out = fleet.run(vm.name, "cat /proc/sys/kernel/random/boot_id")[:2]
    assert rc == 0 and len(out.strip()) == 36

    # A cold reboot goes through the firmware; with -no-reboot that ends QEMU, and the lab says so.
    fleet.run(vm.name, "systemctl --no-block reboot")
    deadline = time.time() + 120
    while vm.running() and time.time() < deadline:
        time.sleep(1)
    assert not vm.running(), "the VM did not go down after systemctl reboot"
    assert fleet.firmware_resets() == [vm.name]
    assert vm.exit_reason().startswith("firmware reset"), vm.exit_reason()

    fleet.down()
    assert _proc_start_time(vm.pid) is None
    assert not os.path.exists(fleet.inventory)
    assert not os.path.exists(vm.overlay)
    assert os.path.exists(vm.serial_log)  # kept for post-mortems
