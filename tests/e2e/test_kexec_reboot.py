"""fleetboot.kexec.kexec_reboot in real playbooks against lab VMs: refuse, fall back cold, jump.

Two VMs serve the four tests (each boot costs ~35 s under TCG): `kexec_vm` runs with -no-reboot
(refusal first, then the real jump), `cold_vm` without it (two cold fallbacks in a row).
"""

import json
import os
import subprocess
import textwrap

import pytest

from .conftest import BIN, REPO
from .jump import NEW_KERNEL, load_new_kernel, ship_loader

COLLECTIONS = os.path.join(REPO, ".build", "collections")
OLD_KERNEL = "6.1.0-54-amd64"


def playbook(fleet, tmp_path, task_args, check=False, timeout=900):
    """Run kexec_reboot with `task_args` on every host of `fleet`; return (process, {host: result})."""
    out_dir = tmp_path / "results"
    out_dir.mkdir(exist_ok=True)
    book = tmp_path / "reboot.yml"
    book.write_text(textwrap.dedent("""\
        - hosts: lab
          gather_facts: false
          tasks:
            - name: Jump
              fleetboot.kexec.kexec_reboot: %s
              register: jump
              ignore_errors: true
            - name: Save the result on the controller
              ansible.builtin.copy:
                content: "{{ jump | to_json }}"
                dest: "%s/{{ inventory_hostname }}.json"
                mode: "0644"
              delegate_to: localhost
              check_mode: false
        """) % (json.dumps(task_args), out_dir))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCALHOST_WARNING="False")
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", fleet.inventory, str(book)]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout, env=env, check=False, cwd=REPO)
    results = {}
    for vm in fleet.vms:
        path = out_dir / ("%s.json" % vm.name)
        assert path.exists(), proc.stdout
        results[vm.name] = json.loads(path.read_text())
    return proc, results


@pytest.fixture(scope="module")
def kexec_vm(fleet_factory):
    return fleet_factory("reboot-kexec", hosts=1)


@pytest.fixture(scope="module")
def cold_vm(fleet_factory):
    return fleet_factory("reboot-cold", hosts=1, no_reboot=False)


def boot_id(fleet, name):
    rc, out, err = fleet.run(name, "cat /proc/sys/kernel/random/boot_id")
    assert rc == 0, err
    return out.strip()


def test_no_image_and_fallback_fail_fails_clearly_without_rebooting(kexec_vm, tmp_path):
    fleet = kexec_vm
    vm = fleet.vms[0]
    identity = (vm.pid, vm.start_time)
    before = boot_id(fleet, vm.name)
    assert fleet.run(vm.name, "cat /sys/kernel/kexec_loaded")[1].strip() == "0"

    # Check mode warns (an earlier kexec_load would have loaded nothing in check mode either).
    proc, results = playbook(fleet, tmp_path, {"fallback": "fail"}, check=True)
    res = results[vm.name]
    assert not res.get("failed") and res["rebooted"] is False, proc.stdout
    assert "[WARNING]" in proc.stdout and "no kexec image is loaded" in proc.stdout, proc.stdout
    assert boot_id(fleet, vm.name) == before

    proc, results = playbook(fleet, tmp_path, {"fallback": "fail", "reboot_timeout": 120})
    res = results[vm.name]
    assert res["failed"] is True, proc.stdout
    assert res["rebooted"] is False
    assert "no kexec image is loaded" in res["msg"] and "fallback: cold" in res["msg"], res["msg"]
    assert res["old_boot_id"] == before and res["old_release"] == OLD_KERNEL

    # Nothing happened to the VM: same boot, same QEMU process, no reboot scheduled.
    assert boot_id(fleet, vm.name) == before
    assert vm.running() and (vm.pid, vm.start_time) == identity, vm.exit_reason()
    assert fleet.run(vm.name, "systemctl is-system-running")[1].strip() in ("running", "degraded")


def test_no_image_and_fallback_cold_reboots_through_the_firmware(cold_vm, tmp_path):
    fleet = cold_vm
    vm = fleet.vms[0]
    before = boot_id(fleet, vm.name)

    proc, results = playbook(fleet, tmp_path, {"fallback": "cold", "reboot_timeout": 600})
    res = results[vm.name]
    print("kexec_reboot cold:", json.dumps(res, sort_keys=True))
    assert not res.get("failed"), proc.stdout
    assert res["rebooted"] is True and res["changed"] is True
    assert res["method"] == "cold"
    assert "no kexec image is loaded" in res["reason"]
    assert res["old_boot_id"] == before and res["new_boot_id"] not in ("", before)
    assert res["new_release"] == OLD_KERNEL  # QEMU boots its -kernel again
    assert 0 < res["downtime"] <= res["elapsed"]
    assert boot_id(fleet, vm.name) == res["new_boot_id"]
    with open(vm.serial_log, errors="replace") as f:
        console = f.read()
    assert "reboot: Restarting system" in console
    assert "kexec_core: Starting new kernel" not in console


def test_kexec_reboot_jumps_into_the_loaded_kernel_without_firmware(kexec_vm, tmp_path):
    fleet = kexec_vm
    vm = fleet.vms[0]
    identity = (vm.pid, vm.start_time)
    before = boot_id(fleet, vm.name)
    ship_loader(fleet, vm.name)
    rc, out, err = load_new_kernel(fleet, vm.name, "auto")
    assert rc == 0, "the loader could not load %s: %s%s" % (NEW_KERNEL, out, err)
    assert fleet.run(vm.name, "cat /sys/kernel/kexec_loaded")[1].strip() == "1"

    # Check mode says what would happen and touches nothing.
    proc, results = playbook(fleet, tmp_path, {"expect_release": NEW_KERNEL}, check=True)
    res = results[vm.name]
    assert not res.get("failed"), proc.stdout
    assert res["changed"] is True and res["rebooted"] is False and res["method"] == "kexec"
    assert boot_id(fleet, vm.name) == before

    proc, results = playbook(fleet, tmp_path, {"expect_release": NEW_KERNEL,
                                               "expect_cmdline": ["console=ttyS0"],
                                               "reboot_timeout": 600})
    res = results[vm.name]
    print("kexec_reboot kexec:", json.dumps(res, sort_keys=True))
    assert not res.get("failed"), proc.stdout
    assert res["method"] == "kexec" and res["rebooted"] is True
    assert (res["old_release"], res["new_release"]) == (OLD_KERNEL, NEW_KERNEL)
    assert res["new_boot_id"] != before and boot_id(fleet, vm.name) == res["new_boot_id"]
    assert 0 < res["downtime"] <= res["elapsed"]
    # The same QEMU process: the VM never went through the firmware (-no-reboot would end it).
    assert vm.running() and (vm.pid, vm.start_time) == identity, vm.exit_reason()
    assert fleet.firmware_resets() == []
    with open(vm.serial_log, errors="replace") as f:
        assert "kexec_core: Starting new kernel" in f.read()


def test_refused_jump_fails_fast_or_falls_back_to_a_really_cold_reboot(cold_vm, tmp_path):
    # A loaded image, but systemd refuses the jump (kexec.target masked): the host-side trigger
    # reports the refusal, so the task does not wait for reboot_timeout.
    fleet = cold_vm
    vm = fleet.vms[0]
    before = boot_id(fleet, vm.name)
    ship_loader(fleet, vm.name)
    rc, out, err = load_new_kernel(fleet, vm.name, "auto")
    assert rc == 0, "the loader could not load %s: %s%s" % (NEW_KERNEL, out, err)
    assert fleet.run(vm.name, "systemctl mask kexec.target")[0] == 0

    proc, results = playbook(fleet, tmp_path, {"fallback": "fail", "reboot_timeout": 600})
    res = results[vm.name]
    print("kexec_reboot refused:", json.dumps(res, sort_keys=True))
    assert res["failed"] is True and res["rebooted"] is False, proc.stdout
    assert "kexec reboot was refused on the host" in res["msg"], res["msg"]
    assert "systemctl kexec failed" in res["msg"] and res["changed"] is False, res["msg"]
    assert res["elapsed"] < 120  # failed at once, not after reboot_timeout
    assert boot_id(fleet, vm.name) == before
    assert fleet.run(vm.name, "cat /sys/kernel/kexec_loaded")[1].strip() == "1"

    # With fallback cold the image is unloaded first, so the reboot goes through the firmware.
    console_mark = os.path.getsize(vm.serial_log)  # this VM already rebooted cold once
    proc, results = playbook(fleet, tmp_path, {"fallback": "cold", "reboot_timeout": 600})
    res = results[vm.name]
    print("kexec_reboot refused, cold:", json.dumps(res, sort_keys=True))
    assert not res.get("failed"), proc.stdout
    assert res["method"] == "cold" and res["rebooted"] is True
    assert res["reason"].startswith("the jump was refused: systemctl kexec failed"), res["reason"]
    assert res["new_boot_id"] != before and res["new_release"] == OLD_KERNEL
    with open(vm.serial_log, "rb") as f:
        f.seek(console_mark)
        console = f.read().decode("utf-8", "replace")
    assert "reboot: Restarting system" in console
    assert "kexec_core: Starting new kernel" not in console
