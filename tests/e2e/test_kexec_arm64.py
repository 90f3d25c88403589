"""arm64 by kexec_load with our purgatory: Debian 6.1.0-54 -> 6.1.0-56 on QEMU virt, once with QEMU's
own device tree and once booted through UEFI (AAVMF: the EFI memory map, runtime services and
ACPI must survive the jump), the VMs without kexec-tools; --method file refused on a kernel
without kexec_file_load; a segment corrupted after digesting halts in purgatory.

Two VMs (one per firmware), each booted once; the device-tree VM ends halted in purgatory.
"""

import json
import time

import pytest

from .foreign_lab import answers_ansible_on_the_older_kernel, require_qemu
from .jump import cli, jump, ship_loader, wait_new_boot

OLD, NEW = "6.1.0-54-arm64", "6.1.0-56-arm64"
HALT = "fleetboot purgatory: sha256 mismatch in segment"


def load_args(method, release=NEW):
    return ["--kernel", "/boot/vmlinuz-" + release, "--initrd", "/boot/initrd.img-" + release,
            "--reuse-cmdline", "--method", method]


def run(fleet, vm, command):
    rc, out, err = fleet.run(vm.name, command)
    assert rc == 0, (command, out, err)
    return out.strip()


def console(vm):
    with open(vm.serial_log, "rb") as f:
        return f.read().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def dt_vm(fleet_factory):
    require_qemu("arm64")
    fleet = fleet_factory("a64-dt", hosts=1, arch="arm64", memory=1024)
    vm = fleet.vms[0]
    ship_loader(fleet, vm.name)
    return fleet, vm


@pytest.fixture(scope="module")
def uefi_vm(fleet_factory):
    require_qemu("arm64")
    fleet = fleet_factory("a64-uefi", hosts=1, arch="arm64", uefi=True, memory=1024)
    vm = fleet.vms[0]
    ship_loader(fleet, vm.name)
    return fleet, vm


def upgrade(fleet, vm, check_efi):
    """Load 6.1.0-56 by kexec_load, jump, and check the new boot (returns the plan and the new dmesg)."""
    identity = (vm.pid, vm.start_time)
    assert run(fleet, vm, "command -v kexec || echo absent; uname -rm").split() == ["absent", OLD, "aarch64"]
    rc, out, err = cli(fleet, vm.name, ["plan", "--json"] + load_args("classic"))
    assert rc == 0, err
    plan = json.loads(out)
    assert [s["what"] for s in plan["segments"]] == ["kernel", "initrd", "dtb", "purgatory"]
    rc, out, err = cli(fleet, vm.name, ["load"] + load_args("auto"))
    assert rc == 0, out + err
    assert "method classic" in out  # auto: this kernel has no kexec_file_load
    assert run(fleet, vm, "cat /sys/kernel/kexec_loaded") == "1"
    cmdline = run(fleet, vm, "cat /proc/cmdline")

    old = jump(fleet, vm.name)
    assert wait_new_boot(fleet, vm.name, old, timeout=400) != old
    assert run(fleet, vm, "uname -r") == NEW
    assert vm.running() and (vm.pid, vm.start_time) == identity, vm.exit_reason()
    assert fleet.firmware_resets() == []
    assert "kexec_core: Starting new kernel" in console(vm)
    assert run(fleet, vm, "cat /proc/cmdline") == cmdline
    dmesg = run(fleet, vm, "dmesg")
    # Fresh seeds reached it: KASLR on (a kaslr-seed) and the RNG seeded from the device tree.
    assert "KASLR disabled" not in dmesg, dmesg[:3000]
    if check_efi:
        efi = run(fleet, vm, "test -d /sys/firmware/efi && ls /sys/firmware/efi/efivars | wc -l; "
                             "test -e /sys/firmware/acpi/tables/DSDT && echo acpi")
        assert int(efi.split()[0]) > 0 and efi.split()[-1] == "acpi", efi  # runtime services and ACPI kept
        # Entered by our purgatory, not through the firmware and the EFI stub again.
        after = console(vm).split("kexec_core: Starting new kernel")[-1]
        assert "EFI stub: Booting" not in after and "Linux version " + NEW.split("-arm64", maxsplit=1)[0] in after
    return plan, dmesg


def test_the_lab_vms_answer_on_the_older_kernel(dt_vm, uefi_vm):
    """The lab itself: each VM in its inventory group, on the older kernel; QEMU's device tree
    without EFI on one, the EFI stub with ACPI through AAVMF on the other."""
    for fleet, vm in (dt_vm, uefi_vm):
        answers_ansible_on_the_older_kernel(fleet, "arm64")
    assert run(dt_vm[0], dt_vm[1], "test -e /sys/firmware/efi && echo efi || echo no-efi") == "no-efi"
    efi_and_acpi = "test -d /sys/firmware/efi && test -e /sys/firmware/acpi/tables/DSDT && echo uefi-acpi"
    assert run(uefi_vm[0], uefi_vm[1], efi_and_acpi) == "uefi-acpi"


def test_method_file_is_refused_before_any_syscall(dt_vm):
    fleet, vm = dt_vm
    rc, out, err = cli(fleet, vm.name, ["load"] + load_args("file"))
    assert rc == 1, out + err
    assert "--method file is refused on this host: the kernel is built without kexec_file_load (CONFIG_KEXEC_FILE)" \
        in err and "use --method classic (or auto)" in err and "Traceback" not in err, err
    assert run(fleet, vm, "cat /sys/kernel/kexec_loaded") == "0"


def test_kexec_with_qemus_device_tree(dt_vm):
    fleet, vm = dt_vm
    _plan, dmesg = upgrade(fleet, vm, check_efi=False)
    assert run(fleet, vm, "test -d /sys/firmware/efi && echo efi || echo no-efi") == "no-efi"
    print("arm64 DT kexec: crng line:", [l for l in dmesg.splitlines() if "crng init done" in l][:1])


def test_kexec_through_uefi_keeps_the_efi_memory_map_and_runtime_services(uefi_vm):
    fleet, vm = uefi_vm
    assert "EFI stub: Booting Linux Kernel" in console(vm)
    _plan, dmesg = upgrade(fleet, vm, check_efi=True)
    print("arm64 UEFI kexec: crng line:", [l for l in dmesg.splitlines() if "crng init done" in l][:1])


def test_corrupted_segment_halts_in_purgatory(dt_vm):
    """Last: the VM ends halted.  The running kernel is 6.1.0-56 after the test above (or -54)."""
    fleet, vm = dt_vm
    release = run(fleet, vm, "uname -r")
    rc, out, err = cli(fleet, vm.name, ["load"] + load_args("classic", release),
                       env={"FLEETBOOT_TEST_CORRUPT_SEGMENT": "kernel"})
    assert rc == 0, out + err
    before = len(console(vm))
    jump(fleet, vm.name)
    deadline = time.time() + 240
    while time.time() < deadline and HALT not in console(vm)[before:]:
        time.sleep(2)
    tail = console(vm)[before:]
    assert HALT + " 0, refusing to boot" in tail, vm.serial_tail()
    assert "kexec_core: Starting new kernel" in tail
    time.sleep(10)
    assert vm.running(), vm.exit_reason()  # halted, not reset
    assert "Linux version" not in console(vm)[before:][tail.index(HALT):]
