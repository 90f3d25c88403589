"""A segment corrupted after digesting makes our purgatory halt instead of booting it."""

import time

from .jump import jump, load_new_kernel, ship_loader

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

    deadline = time.time() + 180
    console = ""
    while time.time() < deadline and MESSAGE not in console:
        time.sleep(2)
        with open(vm.serial_log, errors="replace") as f:
            console = f.read()
    assert MESSAGE in console, vm.serial_tail()
    assert "kexec_core: Starting new kernel" in console
    # Halted, not reset: QEMU is still the same process, and the VM never answers again.
    time.sleep(10)
    assert vm.running(), vm.exit_reason()
    tail = console[console.index(MESSAGE):]
    assert "Linux version" not in tail  # no kernel started after the refusal
    try:
        fleet.boot_id(vm.name, timeout=20)
    except Exception as e:  # LabError: it did not answer
        assert "did not answer SSH" in str(e)
    else:
        raise AssertionError("the VM answered SSH after purgatory should have halted it")
