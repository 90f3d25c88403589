"""A segment corrupted after digesting makes our purgatory halt instead of booting it."""

from .jump import halted_in_purgatory, jump, load_new_kernel, ship_loader

MESSAGE = "fleetboot purgatory: sha256 mismatch"


def test_corrupted_segment_halts_in_purgatory(fleet_factory):
    fleet = fleet_factory("halt", hosts=1)
    vm = fleet.vms[0]
    ship_loader(fleet, vm.name)
    # Test-only hook: flips one byte of the kernel segment after its digest was computed.
    rc, out, err = load_new_kernel(fleet, vm.name, "classic",
                                   env={"FLEETBOOT_TEST_CORRUPT_SEGMENT": "kernel"})
    assert rc == 0, out + err
    jump(fleet, vm.name)

    halted_in_purgatory(fleet, vm, MESSAGE, timeout=180)
    with open(vm.serial_log, errors="replace") as f:
        assert "kexec_core: Starting new kernel" in f.read()
