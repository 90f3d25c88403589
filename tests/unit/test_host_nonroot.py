"""`plan` needs no root: without it /proc/iomem reads as zeros, and the firmware map suffices."""

import os
import re
import shutil

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import loader
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.request import Request
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as sc
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import HostError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host

SYSROOTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "sysroots")


@pytest.fixture
def as_non_root(tmp_path):
    """The recorded 2 GiB crash VM as a non-root user sees it: iomem addresses zeroed,
    boot_params unreadable."""
    root = tmp_path / "host"
    shutil.copytree(os.path.join(SYSROOTS, "lab-seabios-pc-2g-crash"), str(root))
    iomem = root / "proc" / "iomem"
    iomem.write_text(re.sub(r"[0-9a-f]{8,16}-[0-9a-f]{8,16}", "00000000-00000000", iomem.read_text()))
    (root / "sys" / "kernel" / "boot_params" / "data").unlink()
    return str(root)


def test_host_reads_without_iomem_and_says_so(as_non_root):
    host = Host.read(as_non_root)
    assert host.iomem_hidden is True and host.iomem is None and host.crash_region is None
    assert host.memory_map.ram()  # from /sys/firmware/memmap
    assert host.to_dict()["iomem_hidden"] is True


def test_normal_plan_works_and_crash_plan_asks_for_root(as_non_root, debian_kernels, files):
    host = Host.read(as_non_root)
    kernel = debian_kernels["6.1.0-56-amd64"].vmlinuz
    initrd = files[1]
    with loader.make_plan(Request(kernel, initrd, "console=ttyS0", method="classic"), host) as prep:
        prep.plan.check()
    fake = sc.FakeSyscalls()
    with pytest.raises(HostError, match="hides .*non-root users; run as root"):
        loader.load(Request(kernel, initrd, "", kind="crash", method="classic"), fake, host)
    assert fake.calls == []


def test_without_firmware_map_hidden_iomem_is_still_an_error(as_non_root):
    shutil.rmtree(os.path.join(as_non_root, "sys", "firmware", "memmap"))
    with pytest.raises(HostError, match="only zero addresses.*run as root"):
        Host.read(as_non_root)
