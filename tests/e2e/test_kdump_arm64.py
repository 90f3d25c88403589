"""kdump on arm64 through the kdump role: the reservation sized by the aarch64 table and applied by
a kexec reboot, the crash kernel loaded by kexec_load (our ELF core header, linux,elfcorehdr and
linux,usable-memory-range in the capture kernel's device tree), then a real sysrq crash: the
capture kernel saves a vmcore whose PT_LOADs cover the RAM outside the crash region and a
dmesg.txt with the sysrq line.  One 2 GiB VM; boots: the first, one kexec, the capture kernel,
the firmware reboot after it."""

import re

import pytest

from .kdump_flow import VM, crash_and_check_dump, crash_region, playbook, recap, sh, summary_line


@pytest.fixture(scope="module")
def fleet(fleet_factory):
    return fleet_factory("kdump-arm64", hosts=1, arch="arm64", memory=2048, no_reboot=False)


def test_kdump_role_and_a_real_crash_on_arm64(fleet, tmp_path):
    vm = fleet.vm(VM)
    pid = vm.pid
    assert sh(fleet, "uname -m").strip() == "aarch64"
    boot0 = sh(fleet, "cat /proc/sys/kernel/random/boot_id").strip()
    # The loader's own sparse copy (no makedumpfile): the vmcore is the ELF file our core header
    # describes, so its PT_LOADs can be checked against /proc/iomem (makedumpfile's filtered dumps
    # are proven on x86_64, test_kdump_file.py and test_kdump_ssh.py).
    args = ["-e", "kdump_reboot_ok=true", "-e", "kdump_makedumpfile=never"]

    rc, out = playbook(fleet, *args)
    assert rc == 0, out
    assert vm.firmware_reset_count() == 0 and vm.pid == pid and vm.running()
    assert sh(fleet, "cat /proc/sys/kernel/random/boot_id").strip() != boot0
    # 2 GiB of arm64: the aarch64 row of kdump_crashkernel_tables.
    assert "crashkernel=320M" in sh(fleet, "cat /proc/cmdline").split()
    assert sh(fleet, "cat /sys/kernel/kexec_crash_loaded").strip() == "1"
    journal = sh(fleet, "journalctl -b -u fleetboot-kdump-load.service --no-pager")
    assert re.search(r"method classic\s+kind crash", journal), journal
    iomem = sh(fleet, "cat /proc/iomem")
    region = crash_region(iomem)
    assert region[1] - region[0] == 320 << 20
    rc, out = playbook(fleet, *args)
    assert rc == 0 and recap(out)["changed"] == 0, out

    result = crash_and_check_dump(fleet, tmp_path, args, iomem, region, pid)
    print("kdump arm64:", summary_line(result))
