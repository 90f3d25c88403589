"""x86_64 jumps with our loader on one VM (a boot costs ~25 s under TCG, so one VM serves them all),
in this order: 6.1.0-54 -> 6.1.0-56 by kexec_load with our purgatory; 6.1.0-56 -> 6.1.0-54 by
kexec_file_load (the kernel places the segments); then a segment corrupted after digesting makes
our purgatory halt instead of booting it. Every jump stays in the same QEMU process (no firmware
reset); the VM ends halted. The VM has no kexec-tools."""

import pytest

from .jump import NEW_KERNEL, cli, halted_in_purgatory, jump, ship_loader, wait_new_boot

OLD_KERNEL = "6.1.0-54-amd64"
HALT = "fleetboot purgatory: sha256 mismatch"


@pytest.fixture(scope="module")
def jumper(fleet_factory):
    fleet = fleet_factory("jumps", hosts=1)
    vm = fleet.vms[0]
    rc, out, err = fleet.run(vm.name, "command -v kexec || echo absent; uname -r")
    assert rc == 0 and out.split() == ["absent", OLD_KERNEL], out + err  # kexec-tools is not there to help
    ship_loader(fleet, vm.name)
    return fleet, vm


def load(fleet, vm, release, method, env=None):
    return cli(fleet, vm.name, ["load", "--kernel", "/boot/vmlinuz-" + release, "--initrd", "/boot/initrd.img-" + release,
                                "--reuse-cmdline", "--method", method], env=env)


def console(vm):
    with open(vm.serial_log, errors="replace") as f:
        return f.read()


def kexec_into(fleet, vm, release, method):
    identity = (vm.pid, vm.start_time)
    rc, out, err = load(fleet, vm, release, method)
    assert rc == 0, out + err
    assert "method %s" % method in out, out
    assert fleet.run(vm.name, "cat /sys/kernel/kexec_loaded")[1].strip() == "1"
    seen = len(console(vm))
    old = jump(fleet, vm.name)
    assert wait_new_boot(fleet, vm.name, old) != old
    assert fleet.run(vm.name, "uname -r")[1].strip() == release
    assert vm.running() and (vm.pid, vm.start_time) == identity, vm.exit_reason()
    assert fleet.firmware_resets() == []
    assert "kexec_core: Starting new kernel" in console(vm)[seen:]


def test_classic_load_jumps_to_the_new_kernel_without_firmware(jumper):
    kexec_into(*jumper, NEW_KERNEL, "classic")


def test_file_load_jumps_back_to_the_older_kernel(jumper):
    kexec_into(*jumper, OLD_KERNEL, "file")


def test_corrupted_segment_halts_in_purgatory(jumper):
    fleet, vm = jumper
    # Test-only hook: flips one byte of the kernel segment after its digest was computed.
    rc, out, err = load(fleet, vm, NEW_KERNEL, "classic", env={"FLEETBOOT_TEST_CORRUPT_SEGMENT": "kernel"})
    assert rc == 0, out + err
    seen = len(console(vm))
    jump(fleet, vm.name)
    halted_in_purgatory(fleet, vm, HALT, timeout=180)
    assert "kexec_core: Starting new kernel" in console(vm)[seen:]
