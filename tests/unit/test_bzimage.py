"""bzImage setup header and 64-bit boot protocol placement, on real Debian kernels."""

import struct

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import ImageFormatError, KexecError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import ARCH as X86_64
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64.bzimage import BzImage, SetupHeader
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64.vmlinux import Vmlinux
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import bzimage as bz
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import MemoryMap
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import Plan
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import bootparams as bp


def _config_int(kernel, name):
    return int(kernel.config_value(name), 0)


def test_header_matches_debian_build(kernel, vmlinuz):
    h = SetupHeader.parse(vmlinuz)
    assert h.header == b"HdrS"
    assert h.boot_flag == 0xAA55
    # 6.1 speaks boot protocol 2.15 (arch/x86/boot/header.S).
    assert h.version == 0x020F and h.protocol == "2.15"
    assert h.relocatable_kernel == 1  # CONFIG_RELOCATABLE=y
    assert kernel.config_value("RELOCATABLE") == "y"
    assert h.kernel_alignment == _config_int(kernel, "PHYSICAL_ALIGN") == 0x200000
    assert h.pref_address == _config_int(kernel, "PHYSICAL_START") == 0x1000000
    assert h.min_alignment == 21  # MIN_KERNEL_ALIGN_LG2 = PMD_SHIFT on x86_64
    assert h.code32_start == 0x100000
    assert h.loadflags & bz.LOADED_HIGH
    assert h.cmdline_size == 2047  # COMMAND_LINE_SIZE - 1
    assert h.initrd_addr_max == 0x7FFFFFFF
    assert h.vid_mode == 0xFFFF
    assert h.setup_sects > 4 and h.setup_size == (h.setup_sects + 1) * 512
    xlf = h.xloadflags
    assert xlf & bz.XLF_KERNEL_64 and xlf & bz.XLF_CAN_BE_LOADED_ABOVE_4G
    # EFI handover in both widths: CONFIG_EFI_HANDOVER_PROTOCOL and CONFIG_EFI_MIXED.
    assert kernel.config_value("EFI_MIXED") == "y"
    assert xlf & bz.XLF_EFI_HANDOVER_64 and xlf & bz.XLF_EFI_HANDOVER_32
    assert xlf & bz.XLF_EFI_KEXEC  # CONFIG_EFI_STUB on x86_64
    assert kernel.config_value("X86_5LEVEL") == "y" and xlf & bz.XLF_5LEVEL
    # Layout: the payload and the EFI handover entry lie inside the protected-mode part, whose
    # size syssize gives in paragraphs (Debian appends a PE signature after it).
    pm_size = len(vmlinuz) - h.setup_size
    assert h.syssize * 16 <= pm_size < h.syssize * 16 + 64 * 1024
    assert 0 < h.payload_offset and h.payload_offset + h.payload_length <= pm_size
    assert 0 < h.handover_offset < pm_size
    assert h.init_size >= pm_size and h.init_size % 4096 == 0
    assert bytes(vmlinuz[h.setup_size + h.payload_offset:][:6]) == b"\xfd7zXZ\x00"  # CONFIG_KERNEL_XZ
    assert kernel.config_value("KERNEL_XZ") == "y"
    # raw header is the verbatim copy the zero page needs
    assert h.raw == bytes(vmlinuz[0x1F1:h.header_end])
    assert h.header_end == 0x202 + vmlinuz[0x201]
    d = h.to_dict()
    assert d["protocol"] == "2.15" and d["header"] == "HdrS"


def test_two_builds_agree_on_protocol(debian_kernels, vmlinuz_maps):
    hs = [SetupHeader.parse(m) for m in vmlinuz_maps.values()]
    keys = ("version", "xloadflags", "kernel_alignment", "pref_address", "cmdline_size", "setup_sects")
    assert len({tuple(getattr(h, k) for k in keys) for h in hs}) == 1
    assert hs[0] != hs[1]  # different builds: payload sizes differ


def test_probe(vmlinuz):
    assert BzImage.probe(vmlinuz)
    assert X86_64.probe(vmlinuz) is BzImage
    assert not BzImage.probe(b"")
    assert not BzImage.probe(b"\0" * 4096)
    assert not BzImage.probe(b"\x7fELF" + b"\0" * 100)
    assert not Vmlinux.probe(vmlinuz)
    with pytest.raises(ImageFormatError, match="unrecognised kernel image"):
        X86_64.probe(b"\0" * 4096)


def _patched(buf, off, fmt, value):
    data = bytearray(buf)
    struct.pack_into("<" + fmt, data, off, value)
    return data


@pytest.mark.parametrize("off,fmt,value,msg", [
    (0x236, "H", 0x7E, "XLF_KERNEL_64"),
    (0x206, "H", 0x020B, "protocol 2.11"),
    (0x206, "H", 0x0201, "protocol 2.01"),
    (0x211, "B", 0x00, "zImage"),
    (0x234, "B", 0x00, "not relocatable"),
    (0x230, "I", 0x3000, "kernel_alignment"),
    (0x260, "I", 0, "init_size"),
])
def test_refuses_unbootable(vmlinuz, off, fmt, value, msg):
    image = BzImage.parse(_patched(vmlinuz, off, fmt, value))
    with pytest.raises(ImageFormatError, match=msg):
        image.check_loadable()


def _plan_and_host(qemu_host, **kw):
    return Plan(qemu_host.memory_map, **kw), qemu_host


def test_load_places_like_the_boot_protocol_says(vmlinuz, qemu_host):
    plan, host = _plan_and_host(qemu_host)
    initrd = bytes(range(256)) * 40000
    li = BzImage.load(vmlinuz, initrd, "console=ttyS0 root=/dev/vda1 ro", host, plan)
    h = SetupHeader.parse(vmlinuz)
    kseg, iseg, bseg = plan.segment("kernel"), plan.segment("initrd"), plan.segment("boot_params")
    assert kseg.mem % h.kernel_alignment == 0
    assert kseg.mem >= bz.MIN_KERNEL_LOAD_ADDR
    assert kseg.memsz >= h.init_size
    assert kseg.bufsz == len(vmlinuz) - h.setup_size
    assert li.entry64 == kseg.mem + 0x200
    assert li.regs == {"rip": kseg.mem + 0x200, "rsi": bseg.mem, "rbx": 0}
    assert li.boot_params_addr == bseg.mem >= bz.MIN_BOOTPARAM_ADDR
    assert iseg.mem >= bz.MIN_INITRD_LOAD_ADDR and iseg.mem % 4096 == 0
    assert li.initrd_addr == iseg.mem and li.initrd_size == len(initrd)
    assert li.segments == ["boot_params", "kernel", "initrd"]
    plan.check()
    # The kernel is not copied: the segment buffer is a view on our mapping.
    assert isinstance(kseg.buf, memoryview) and kseg.buf.obj is vmlinuz
    zp = bp.parse_zero_page(bseg.buf)
    assert zp["cmd_line_ptr"] == li.cmdline_addr == bseg.mem + 4096
    assert zp["ramdisk_image"] == iseg.mem and zp["ramdisk_size"] == len(initrd)
    assert zp["type_of_loader"] == 0xFF
    assert li.to_dict()["format"] == "bzImage"


def test_load_without_above_4g_keeps_everything_low(vmlinuz, qemu_host):
    data = _patched(vmlinuz, 0x236, "H", bz.XLF_KERNEL_64)
    plan, host = _plan_and_host(qemu_host)
    li = BzImage.load(data, b"i" * 100000, "quiet", host, plan)
    for seg in plan.segments:
        assert seg.mem + seg.memsz <= 1 << 32, seg
    assert li.initrd_addr + li.initrd_size - 1 <= 0x7FFFFFFF
    plan.check()


def test_initrd_addr_max_respected(vmlinuz, qemu_host):
    data = _patched(_patched(vmlinuz, 0x236, "H", bz.XLF_KERNEL_64), 0x22C, "I", 0x3FFFFFFF)
    plan, host = _plan_and_host(qemu_host)
    li = BzImage.load(data, b"i" * 100000, "", host, plan)
    assert li.initrd_addr + li.initrd_size - 1 <= 0x3FFFFFFF


def test_cmdline_too_long_names_both_lengths(vmlinuz, qemu_host):
    plan, host = _plan_and_host(qemu_host)
    with pytest.raises(ImageFormatError, match=r"2048 bytes .* at most 2047"):
        BzImage.load(vmlinuz, None, "x" * 2048, host, plan)
    assert plan.segments == []  # nothing placed before the refusal
    BzImage.load(vmlinuz, None, "x" * 2047, host, Plan(host.memory_map)).cmdline  # exactly fits


def test_cmdline_nul_refused(vmlinuz, qemu_host):
    plan, host = _plan_and_host(qemu_host)
    with pytest.raises(KexecError, match="NUL"):
        BzImage.load(vmlinuz, None, "a\0b", host, plan)


def test_crash_load_stays_in_crash_region(vmlinuz, qemu_host):
    region = (0x30000000, 0x40000000)
    plan = Plan(qemu_host.memory_map, kind="crash", crash_region=region)
    li = BzImage.load(vmlinuz, b"r" * 3000000, "elfcorehdr=0x31000000 irqpoll", qemu_host, plan)
    for seg in plan.segments:
        assert region[0] <= seg.mem and seg.mem + seg.memsz <= region[1]
    assert li.kernel_addr % 0x200000 == 0
    plan.check()


def test_crash_region_too_small(vmlinuz, qemu_host):
    plan = Plan(qemu_host.memory_map, kind="crash", crash_region=(0x30000000, 0x32000000))
    with pytest.raises(KexecError):
        BzImage.load(vmlinuz, None, "", qemu_host, plan)


def test_no_initrd(vmlinuz, qemu_host):
    plan, host = _plan_and_host(qemu_host)
    li = BzImage.load(vmlinuz, None, "", host, plan)
    assert li.initrd_addr is None and plan.segment("initrd") is None
    zp = bp.parse_zero_page(plan.segment("boot_params").buf)
    assert zp["ramdisk_image"] == 0 and zp["ramdisk_size"] == 0
    li2 = BzImage.load(vmlinuz, b"", "", host, Plan(host.memory_map))
    assert li2.initrd_addr is None


def test_load_is_deterministic(vmlinuz, qemu_host):
    a, b = Plan(qemu_host.memory_map), Plan(qemu_host.memory_map)

    def fixed(n):
        return b"\x5a" * n
    # Placement and every byte are a function of the inputs; the RNG seed is the one input that
    # is fresh each time (see test_bootparams), so both loads get the same one here.
    la = BzImage.load(vmlinuz, b"abc" * 1000, "x", qemu_host, a, entropy=fixed)
    lb = BzImage.load(vmlinuz, b"abc" * 1000, "x", qemu_host, b, entropy=fixed)
    assert la == lb and a.to_dict() == b.to_dict()


def test_small_memory_does_not_fit(vmlinuz, qemu_host):
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import Range
    mm = MemoryMap([Range(0, 0x9FC00), Range(0x100000, 0x2000000)])  # 32 MiB box
    with pytest.raises(KexecError, match="does not fit|no hole"):
        BzImage.load(vmlinuz, None, "", qemu_host, Plan(mm), memory_map=mm)
