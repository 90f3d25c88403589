"""kexec_load on a host booted through UEFI (OVMF): the new kernel keeps EFI runtime services.

The zero page we build carries efi_info and the EFI runtime map (SETUP_EFI), so the new kernel
maps the runtime services where the old one did and can still read EFI variables.
"""

from .jump import NEW_KERNEL, jump, load_new_kernel, ship_loader, wait_new_boot

# Count the variables (GetNextVariableName) and read one (GetVariable): both are EFI runtime calls.
EFI_CHECK = ("cd /sys/firmware/efi/efivars && ls | grep -c . && "
             "v=$(ls | grep -m1 PlatformLangCodes) && echo $v && od -An -tx1 $v")


def test_classic_load_on_uefi_keeps_efi_runtime(fleet_factory):
    fleet = fleet_factory("uefi", hosts=1, uefi=True)
    vm = fleet.vms[0]
    identity = (vm.pid, vm.start_time)
    rc, before, err = fleet.run(vm.name, EFI_CHECK)
    assert rc == 0, err

    ship_loader(fleet, vm.name)
    rc, out, err = load_new_kernel(fleet, vm.name, "classic")
    assert rc == 0, out + err
    assert "warning" not in (out + err).lower(), out + err  # EFI was not dropped

    old = jump(fleet, vm.name)
    wait_new_boot(fleet, vm.name, old)
    assert fleet.run(vm.name, "uname -r")[1].strip() == NEW_KERNEL
    rc, after, err = fleet.run(vm.name, EFI_CHECK)
    assert rc == 0, err
    assert int(after.split()[0]) > 0  # efivars readable: runtime services work after the jump
    assert after.split()[1:] == before.split()[1:]  # the same variable, read through EFI runtime
    dmesg = fleet.run(vm.name, "dmesg | grep -i efi | head -20")[1]
    assert "EFI v" in dmesg or "efi: " in dmesg, dmesg
    assert vm.running() and (vm.pid, vm.start_time) == identity, vm.exit_reason()
    assert fleet.firmware_resets() == []
