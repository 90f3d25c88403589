"""The ppc64le lab: Debian bookworm on `pseries` with SLOF (TCG), 64 KiB-page 6.1 kernels."""

from .conftest import ansible
from .foreign_lab import (answers_ansible_on_the_older_kernel, firmware_reset_is_seen_on_the_console,
                          one_line, require_qemu)


def test_ppc64le_pseries_answers_ansible_on_the_older_kernel(fleet_factory):
    require_qemu("ppc64le")
    fleet = fleet_factory("ppc64le", hosts=1, arch="ppc64le")
    answers_ansible_on_the_older_kernel(fleet, "ppc64le")
    vm = fleet.vms[0]
    assert one_line(ansible(fleet, "all", "-m", "command", "-a", "getconf PAGESIZE"), vm.name) == "65536"
    with open(vm.serial_log, "rb") as f:
        assert b"SLOF" in f.read()
    firmware_reset_is_seen_on_the_console(fleet)
    fleet.down()
