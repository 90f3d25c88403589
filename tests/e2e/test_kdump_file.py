"""kdump with the crash kernel loaded by kexec_file_load (the kernel builds the core header): the role on a 2 GiB
lab VM with its defaults (makedumpfile installed from Debian's mirror and used), then kdump_enabled: false (unloaded,
removed) and a real sysrq crash leaving a filtered, compressed dump; see kdump_flow.py for the steps."""

import pytest

from .kdump_flow import run_kdump_story, summary_line


@pytest.fixture(scope="module")
def fleet(fleet_factory):
    return fleet_factory("kdump-file", hosts=1, memory=2048, no_reboot=False)


def test_kdump_role_and_a_real_crash_with_method_file(fleet, tmp_path):
    result = run_kdump_story(fleet, tmp_path, "file", disable_round=True)
    print("kdump file:", summary_line(result))
