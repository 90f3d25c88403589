"""What a capture environment needs (crash/sizing.py) and the check the kdump role makes with it
(kexec_facts' crash_estimate): crashkernel= syntax, the estimate's parts, and a 2 TiB host (a lab
recording scaled up, tests/fixtures/sysroots/README.md) whose 256 MiB reservation is refused with
the size to use."""

import os
import shutil

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.crash import sizing
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import PlanError
from ansible_collections.fleetboot.kexec.plugins.modules import kexec_facts

from tests.unit.conftest import newc_initrd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")
GIB = 1 << 30
MIB = 1 << 20


@pytest.mark.parametrize("value, ram, expected", [
    ("256M", 2 * GIB, 256 * MIB),
    ("512M@16M", 2 * GIB, 512 * MIB),
    ("1G,high", 64 * GIB, GIB),
    ("1G-4G:192M,4G-64G:256M,64G-:512M", 2 * GIB, 192 * MIB),
    ("1G-4G:192M,4G-64G:256M,64G-:512M", 64 * GIB, 512 * MIB),
    ("1G-4G:192M,4G-64G:256M,64G-:512M", 2048 * GIB, 512 * MIB),
    ("1G-4G:192M", 512 * MIB, 0),
    ("2G-4G:320M,4G-:512M@16M", 3 * GIB, 320 * MIB),
    ("auto", 2 * GIB, None),
    ("256X", 2 * GIB, None),
    ("1G:256M", 2 * GIB, None),
])
def test_crashkernel_values_read_as_the_kernel_reads_them(value, ram, expected):
    assert sizing.crashkernel_bytes(value, ram) == expected


def test_estimate_grows_with_ram_through_the_bitmaps():
    small = sizing.estimate(2 * GIB, 63 * MIB, 6 * MIB)  # the lab's initramfs: saving is the larger peak
    big = sizing.estimate(2048 * GIB, 63 * MIB, 6 * MIB)
    assert small["makedumpfile_bitmaps"] == 128 * 1024  # 2 bits per 4 KiB page
    assert big["makedumpfile_bitmaps"] == 128 * MIB
    assert big["needed"] - small["needed"] == big["makedumpfile_bitmaps"] - small["makedumpfile_bitmaps"]
    # A big initramfs makes booting the larger peak on a small host.
    booting = sizing.estimate(2 * GIB, 63 * MIB, 100 * MIB)
    assert booting["booting"] > booting["saving"] and booting["needed"] == booting["booting"] + sizing.LOADER_OVERHEAD
    # An uncompressed (cpio) initramfs is counted once more when unpacked, not three times.
    plain = sizing.estimate(2 * GIB, 63 * MIB, 100 * MIB, initrd_plain=100 * MIB)
    assert plain["initrd_unpacked"] == 100 * MIB


def test_suggestion_holds_the_need():
    for needed in (1, 64 * MIB, 64 * MIB + 1, 291 * MIB):
        size = sizing.parse_size(sizing.suggest(needed))
        assert needed <= size < needed + 64 * MIB


@pytest.fixture
def big_host(tmp_path, debian_kernels):
    """The 2 TiB host with Debian's 6.1.0-54 kernel and a 36 MiB initramfs in its /boot."""
    root = tmp_path / "host"
    shutil.copytree(os.path.join(SYSROOTS, "scaled-seabios-pc-2t-crash"), str(root))
    release = "6.1.0-54-amd64"
    pkg = debian_kernels[release]
    shutil.copy(pkg.vmlinuz, str(root / "boot" / ("vmlinuz-" + release)))
    (root / "boot" / ("initrd.img-" + release)).write_bytes(newc_initrd(36 * MIB))
    return str(root)


def test_a_2_tib_host_with_256m_is_refused_with_the_size_to_use(big_host):
    facts = kexec_facts.gather(big_host, crashkernel="256M")
    est = facts["crash_estimate"]
    assert est["ram"] > 2047 * GIB and est["reserved"] == 256 * MIB
    assert est["makedumpfile_bitmaps"] == 128 * MIB
    check = est["check"]
    assert check["enough"] is False and check["bytes"] == 256 * MIB
    msg = check["message"]
    assert msg.startswith("crashkernel=256M reserves 256.0 MiB on this host, but its capture kernel needs about")
    assert "128.0 MiB for makedumpfile's page bitmaps over 2048.0 GiB of RAM" in msg
    assert msg.endswith("use crashkernel=%s" % est["suggested_crashkernel"])
    suggested = sizing.parse_size(est["suggested_crashkernel"])
    assert est["needed"] <= suggested and suggested > 256 * MIB
    with pytest.raises(PlanError, match="use crashkernel=%s" % est["suggested_crashkernel"]):
        sizing.require_reservation(est, "256M")
    # The size it names is taken, and so is the x86 table's row for such a host.
    for enough in (est["suggested_crashkernel"], "512M", "1G-64G:256M,64G-:512M"):
        assert kexec_facts.gather(big_host, crashkernel=enough)["crash_estimate"]["check"]["enough"] is True, enough


def test_the_same_reservation_holds_on_the_2_gib_recording(tmp_path, debian_kernels):
    root = tmp_path / "host"
    shutil.copytree(os.path.join(SYSROOTS, "lab-seabios-pc-2g-crash"), str(root))
    pkg = debian_kernels["6.1.0-54-amd64"]
    shutil.copy(pkg.vmlinuz, str(root / "boot" / "vmlinuz-6.1.0-54-amd64"))
    (root / "boot" / "initrd.img-6.1.0-54-amd64").write_bytes(newc_initrd(36 * MIB))
    est = kexec_facts.gather(str(root), crashkernel="256M")["crash_estimate"]
    assert est["check"]["enough"] is True and est["needed"] < 256 * MIB


def test_facts_without_a_kernel_say_why(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(os.path.join(SYSROOTS, "scaled-seabios-pc-2t-crash"), str(root))
    facts = kexec_facts.gather(str(root), crashkernel="256M")
    assert facts["crash_estimate"] is None
    assert facts["crash_estimate_error"] == "no kernel image for the running release 6.1.0-54-amd64 in /boot"
    assert facts["crash_size"] == int(open(os.path.join(SYSROOTS, "scaled-seabios-pc-2t-crash",
                                                        "sys/kernel/kexec_crash_size")).read())
    assert facts["crash_hotplug"] == {"cpu": None, "memory": None}
