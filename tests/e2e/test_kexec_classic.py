"""A real kexec_load jump from 6.1.0-54 to 6.1.0-56 with our loader and our purgatory."""

from .jump import upgrade_by_kexec


def test_classic_load_jumps_to_the_new_kernel_without_firmware(fleet_factory):
    upgrade_by_kexec(fleet_factory, "classic")
