"""The vmcore reader and the kernel log on arm64 dumps (tests/unit/vmcore_builder_arm64.py):
linear map, kernel image (kimage_voffset), page-table walks with 4/16/64 KiB granules, and the
printk ringbuffer wherever it lives."""

import lzma
import os

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch import vmcore_memory
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64.vmcore import Arm64Memory
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.dump import printk, vmcore

from tests.unit import vmcore_builder as vb
from tests.unit import vmcore_builder_arm64 as ab

EM_AARCH64 = 183


def write(tmp_path, kernel, name="core"):
    return vb.write_core(str(tmp_path / name), kernel, machine=EM_AARCH64)


def memory(path):
    core = vmcore.ElfCore(path)
    return core, Arm64Memory(core, core.vmcoreinfo())


@pytest.mark.parametrize("where", ["direct", "vmalloc", "huge", "image"])
def test_kernel_log_wherever_the_ring_lives(tmp_path, where):
    kernel = ab.Kernel()
    ring = vb.Ringbuffer(count_bits=5, size_bits=10)
    for k in range(25):
        ring.add(("arm64 message %d" % k).encode(), ts_nsec=1000 * k, caller_id=7)
    ring.place(kernel, where=where)
    log = printk.kernel_log(write(tmp_path, kernel), vmcore_memory)
    assert log["format"] == "lockless"
    assert [(r["seq"], r["ts_nsec"], r["text"].encode()) for r in log["records"]] == ring.expected()
    assert log["records"][-1]["text"] == "arm64 message 24"


def test_linear_map_and_image_translate_by_arithmetic(tmp_path):
    kernel = ab.Kernel()
    va, pa = kernel.image_var(8)
    kernel.mem.put(pa, "Q", 0x1122334455667788)
    kernel.mem.put(0x40500000, "Q", 0x99)
    core, mem = memory(write(tmp_path, kernel))
    with core:
        assert mem.vtop(va) == pa and mem.u64(va) == 0x1122334455667788
        assert mem.vtop(0xffff000000500000) == 0x40500000 and mem.u64(0xffff000000500000) == 0x99
        assert mem.linear == (0xffff000000000000, 0xffff800000000000)


@pytest.mark.parametrize("va_bits,granule,leaf", [
    (48, 4096, 4096), (48, 4096, 2 << 20), (48, 4096, 1 << 30), (39, 4096, 4096),
    (47, 16384, 16384), (47, 16384, 32 << 20), (42, 65536, 65536), (48, 65536, 512 << 20),
])
def test_page_walk_granules_levels_and_blocks(tmp_path, va_bits, granule, leaf):
    # Large blocks: only the page read inside them needs to be in the dump.
    ram = ((0x40000000, 0x2000000),) if leaf < (32 << 20) else ((0x40000000, 0x1000000), (0x80000000 + leaf // 2, 0x10000))
    kernel = ab.Kernel(ram=ram, va_bits=va_bits, granule=granule)
    target = 0x40C00000 if leaf < (32 << 20) else 0x80000000
    vaddr = (kernel.VMALLOC + leaf - 1) // leaf * leaf + 4 * leaf
    kernel.pt.map_page(vaddr, target, leaf)
    kernel.mem.put(target + leaf // 2 + 8, "Q", 0xABCDEF)
    core, mem = memory(write(tmp_path, kernel))
    with core:
        assert mem.page_size == granule and mem.va_bits == va_bits
        assert mem.vtop(vaddr + leaf // 2 + 8) == target + leaf // 2 + 8
        assert mem.u64(vaddr + leaf // 2 + 8) == 0xABCDEF
        with pytest.raises(vmcore.VmcoreError, match="not mapped"):
            mem.vtop(vaddr + 64 * leaf)


def test_randomized_linear_map_wraps_phys_offset(tmp_path):
    """As seen on Debian's 6.1 under QEMU: 0x40000000 at 0xffff3a9180000000 in the linear map."""
    kernel = ab.Kernel(linear_slide=0x3a9180000000)
    assert int(kernel.info["NUMBER(PHYS_OFFSET)"], 16) > 1 << 63
    kernel.mem.put(0x40500000, "Q", 0x77)
    core, mem = memory(write(tmp_path, kernel))
    with core:
        assert mem.vtop(0xffff3a9180500000) == 0x40500000 and mem.u64(0xffff3a9180500000) == 0x77


@pytest.mark.parametrize("where", ["direct", "vmalloc"])
def test_log_with_a_randomized_linear_map(tmp_path, where):
    kernel = ab.Kernel(linear_slide=0x3a9180000000)
    ring = vb.Ringbuffer(count_bits=4, size_bits=10)
    for k in range(5):
        ring.add(b"slid %d" % k, ts_nsec=k)
    ring.place(kernel, where=where)
    log = printk.kernel_log(write(tmp_path, kernel), vmcore_memory)
    assert [r["text"] for r in log["records"]] == ["slid %d" % k for k in range(5)]


def test_pre_5_4_layout_has_the_linear_map_on_top(tmp_path):
    kernel = ab.Kernel(release="4.19.0-27-arm64", stext=False)
    core, mem = memory(write(tmp_path, kernel))
    with core:
        assert mem.linear == (0xffff800000000000, 1 << 64)
        assert mem.vtop(0xffff800000100000) == 0x40100000


def test_52_bit_build_on_a_48_bit_cpu(tmp_path):
    kernel = ab.Kernel()
    kernel.info["NUMBER(VA_BITS)"] = "52"
    kernel.info["NUMBER(TCR_EL1_T1SZ)"] = "0x10"  # as 6.1 prints it (%llx)
    core, mem = memory(write(tmp_path, kernel))
    with core:
        assert mem.va_bits == 48


@pytest.mark.parametrize("key", ["NUMBER(VA_BITS)", "NUMBER(kimage_voffset)", "NUMBER(PHYS_OFFSET)"])
def test_missing_keys_are_named(tmp_path, key):
    kernel = ab.Kernel()
    del kernel.info[key]
    path = write(tmp_path, kernel)
    with vmcore.ElfCore(path) as core, pytest.raises(vmcore.VmcoreError, match=r"lacks %s" % key.replace("(", r"\(").replace(")", r"\)")):
        Arm64Memory(core, core.vmcoreinfo())


def test_walk_needs_swapper_pg_dir(tmp_path):
    kernel = ab.Kernel()
    del kernel.info["SYMBOL(swapper_pg_dir)"]
    core, mem = memory(write(tmp_path, kernel))
    with core, pytest.raises(vmcore.VmcoreError, match=r"lacks SYMBOL\(swapper_pg_dir\)"):
        mem.vtop(ab.KIMAGE_VADDR + (2 << 30))


def test_the_registry_reads_aarch64_cores_with_this_reader(tmp_path):
    kernel = ab.Kernel()
    with vmcore.ElfCore(write(tmp_path, kernel)) as core:
        assert isinstance(vmcore_memory(core, core.vmcoreinfo()), Arm64Memory)


# ---- a real arm64 crash -------------------------------------------------------------------------
# A lab VM (Debian 6.1.0-56-arm64 on QEMU virt, booted by our loader, crash kernel loaded by it)
# crashed with sysrq; its /proc/vmcore cut in the capture kernel to the 150 pages the log reader
# touches (the PT_LOADs keep their physical and virtual addresses), and the serial console's lines
# from the sysrq to the jump.

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "vmcore")


@pytest.fixture(scope="module")
def real_core(tmp_path_factory):
    path = tmp_path_factory.mktemp("real") / "debian-6.1.0-56-arm64-sysrq.core"
    with lzma.open(os.path.join(FIXTURES, "debian-6.1.0-56-arm64-sysrq.core.xz")) as f:
        path.write_bytes(f.read())
    return str(path)


def test_real_arm64_crash_log_matches_the_console(real_core):
    log = printk.kernel_log(real_core, vmcore_memory)
    lines = log["dmesg"].splitlines()
    with open(os.path.join(FIXTURES, "debian-6.1.0-56-arm64-sysrq.console.txt"), encoding="utf-8") as f:
        console = f.read().splitlines()
    assert log["osrelease"] == "6.1.0-56-arm64" and len(log["records"]) == 376
    assert lines[1].startswith("[    0.000000] Linux version 6.1.0-56-arm64")
    assert lines[-len(console):] == console
    assert console[0] == "[   62.250482] sysrq: Trigger a crash"


def test_real_arm64_dump_translations_agree(real_core):
    with vmcore.ElfCore(real_core) as core:
        info = core.vmcoreinfo()
        mem = Arm64Memory(core, info)
        # KASLR moved the linear map too: PHYS_OFFSET wrapped below zero, T1SZ printed in hex.
        assert mem.phys_offset == 0xffffad23c0000000 and mem.va_bits == 48
        prb = info.symbol("prb")
        assert mem._walk(prb) == mem.vtop(prb) == (prb - mem.kimage_voffset) & ((1 << 64) - 1) == 0x41ce8750
