"""kdump with the crash kernel loaded by kexec_load (our ELF core header, backup region and capture e820): the role on a 2 GiB
lab VM with kdump_makedumpfile: never (nothing installed; the sparse ELF copy, whose PT_LOADs are our header's), then a
real sysrq crash; see kdump_flow.py for the steps."""

import pytest

from .kdump_flow import run_kdump_story, summary_line


@pytest.fixture(scope="module")
def fleet(fleet_factory):
    return fleet_factory("kdump-classic", hosts=1, memory=2048, no_reboot=False)


def test_kdump_role_and_a_real_crash_with_method_classic(fleet, tmp_path):
    result = run_kdump_story(fleet, tmp_path, "classic", makedumpfile="never")
    print("kdump classic:", summary_line(result))
