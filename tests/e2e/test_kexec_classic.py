"""A real kexec_load jump from 6.1.0-54 to 6.1.0-56 with our loader and our purgatory."""

from .jump import NEW_KERNEL, jump, load_new_kernel, ship_loader, wait_new_boot


def test_classic_load_jumps_to_the_new_kernel_without_firmware(fleet_factory):
    fleet = fleet_factory("classic", hosts=1)
    vm = fleet.vms[0]
    identity = (vm.pid, vm.start_time)
    rc, out, dummy = fleet.run(vm.name, "command -v kexec || echo absent; uname -r")
    assert out.split() == ["absent", "6.1.0-54-amd64"]  # kexec-tools is not there to help

    ship_loader(fleet, vm.name)
    rc, out, err = load_new_kernel(fleet, vm.name, "classic")
    assert rc == 0, out + err
    assert fleet.run(vm.name, "cat /sys/kernel/kexec_loaded")[1].strip() == "1"

    old = jump(fleet, vm.name)
    new = wait_new_boot(fleet, vm.name, old)
    assert new != old
    assert fleet.run(vm.name, "uname -r")[1].strip() == NEW_KERNEL
    assert vm.running() and (vm.pid, vm.start_time) == identity, vm.exit_reason()
    assert fleet.firmware_resets() == []
    with open(vm.serial_log, errors="replace") as f:
        assert "kexec_core: Starting new kernel" in f.read()
