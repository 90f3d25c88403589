"""The arm64 lab: Debian bookworm on `virt` (TCG), with QEMU's device tree and through UEFI."""

from .conftest import ansible
from .foreign_lab import (answers_ansible_on_the_older_kernel, firmware_reset_is_seen_on_the_console,
                          one_line, require_qemu)


def test_arm64_virt_answers_ansible_on_the_older_kernel(fleet_factory):
    require_qemu("arm64")
    fleet = fleet_factory("arm64", hosts=1, arch="arm64")
    answers_ansible_on_the_older_kernel(fleet, "arm64")
    # Direct kernel boot: QEMU's own device tree, no EFI.
    vm = fleet.vms[0].name
    assert one_line(ansible(fleet, "all", "-m", "shell", "-a",
                            "test -e /sys/firmware/efi && echo efi || echo no-efi; "
                            "tr -d '\\0' < /proc/device-tree/compatible"), vm) \
        .replace("\n", " ").startswith("no-efi")
    firmware_reset_is_seen_on_the_console(fleet)
    fleet.down()


def test_arm64_uefi_boots_through_the_firmware_with_acpi(fleet_factory):
    require_qemu("arm64")
    fleet = fleet_factory("arm64-uefi", hosts=1, arch="arm64", uefi=True)
    answers_ansible_on_the_older_kernel(fleet, "arm64")
    vm = fleet.vms[0]
    # The kernel ran as an EFI application (EFI stub), got the EFI memory map and ACPI tables.
    assert one_line(ansible(fleet, "all", "-m", "shell", "-a",
                            "test -d /sys/firmware/efi && test -e /sys/firmware/acpi/tables/DSDT "
                            "&& echo uefi-acpi"), vm.name) == "uefi-acpi"
    with open(vm.serial_log, "rb") as f:
        console = f.read()
    assert b"EFI stub: Booting Linux Kernel" in console
    fleet.down()
