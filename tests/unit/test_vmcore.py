"""The vmcore reader against synthetic crash dumps (tests/unit/vmcore_builder.py) and a real one.

The real one is a cut of a lab VM's /proc/vmcore after `echo c > /proc/sysrq-trigger` (Debian
6.1.0-54): only the pages the reader touches, checked against the serial console's lines.
"""

import lzma
import os
import struct

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.dump import vmcore
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch import vmcore_memory
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.dump import printk
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64.pagewalk import X86_64Memory
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import KexecError

from tests.unit import vmcore_builder as vb


def kernel_log(path):
    """The kernel log of a dump, read through the architecture its core names."""
    return printk.kernel_log(path, vmcore_memory)


FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "vmcore")


def texts(log):
    return [r["text"] for r in log["records"]]


def build(tmp_path, ring=None, where="direct", levels=4, layout=None, name="core", **core_kwargs):
    kernel = vb.Kernel(levels=levels)
    if ring is not None:
        ring.place(kernel, layout=layout, where=where)
    return vb.write_core(str(tmp_path / name), kernel, **core_kwargs), kernel


def filled_ring(n=40, **kwargs):
    ring = vb.Ringbuffer(**kwargs)
    for k in range(n):
        ring.add(("message %d %s" % (k, "x" * (k % 23))).encode(), ts_nsec=1000000 * k + 17, caller_id=100 + k)
    return ring


# ---- ELF core and VMCOREINFO ----------------------------------------------------------------

def test_parse_vmcoreinfo_keys_and_typed_values():
    entries = vmcore.parse_vmcoreinfo(b"OSRELEASE=6.1.0\nSYMBOL(prb)=ffffffff994643e0\nOFFSET(prb_desc.state_var)=0\n"
                                      b"SIZE(printk_info)=88\nNUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\nLENGTH(node_data)=1024\n"
                                      b"KERNELOFFSET=16a00000\ngarbage line\n\0\0ignored=1")
    info = vmcore.VmcoreInfo(entries)
    assert entries["OSRELEASE"] == "6.1.0" and "ignored" not in entries and "garbage line" not in entries
    assert info.symbol("prb") == 0xffffffff994643e0
    assert info.offset("prb_desc", "state_var") == 0
    assert info.size("printk_info") == 88
    assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
    assert info.length("node_data") == 1024
    assert info.kernel_offset() == 0x16a00000
    assert info.number("pgtable_l5_enabled", 0) == 0
    with pytest.raises(vmcore.VmcoreError, match=r"lacks SYMBOL\(log_buf\)"):
        info.symbol("log_buf")
    with pytest.raises(vmcore.VmcoreError, match="lacks SYMBOL\\(a\\), SIZE\\(b\\)"):
        info.require(["SYMBOL(a)", "SYMBOL(prb)", "SIZE(b)"], "x")


def test_phys_reads_across_segments_and_memsz_zeros(tmp_path):
    blob_a, blob_b = os.urandom(8192), os.urandom(4096)
    path = tmp_path / "c"
    path.write_bytes(vb.core_bytes([(0x200000, blob_a), (0x202000, blob_b)], vb.note("VMCOREINFO", 0, b"A=1\n"),
                                   extra_memsz=4096))
    with vmcore.ElfCore(str(path)) as core:
        assert core.vmcoreinfo().entries == {"A": "1"}
        assert core.read_phys(0x201ff0, 32) == blob_a[-16:] + blob_b[:16]
        assert core.read_phys(0x202ff8, 16) == blob_b[-8:] + bytes(8)  # p_memsz beyond p_filesz reads as zeros
        assert core.touched == {0x201, 0x202, 0x203}
        with pytest.raises(vmcore.VmcoreError, match="0x204000 is not in the dump"):
            core.read_phys(0x203ff0, 32)
        with pytest.raises(vmcore.VmcoreError, match="0x1000 is not in the dump"):
            core.read_phys(0x1000, 8)


@pytest.mark.parametrize("patch, message", [
    ({4: 1}, "32-bit little-endian ELF"),
    ({5: 2}, "64-bit big-endian"),
    ({16: 2}, "type 2, not a core"),
    ({18: 8}, "ELF machine 8; only aarch64, ppc64le, x86_64"),
    ({0: 0x7e}, "not an ELF core"),
])
def test_refuses_other_formats(tmp_path, patch, message):
    raw = bytearray(vb.core_bytes([(0x1000, bytes(4096))], vb.note("VMCOREINFO", 0, b"A=1\n")))
    for offset, value in patch.items():
        raw[offset] = value
    (tmp_path / "c").write_bytes(bytes(raw))
    with pytest.raises(vmcore.VmcoreError, match=message):
        vmcore.ElfCore(str(tmp_path / "c"))


def test_truncated_and_noteless_cores(tmp_path):
    raw = vb.core_bytes([(0x1000, os.urandom(8192))], vb.note("CORE", 1, bytes(16)))
    (tmp_path / "short").write_bytes(raw[:-100])
    with pytest.raises(vmcore.VmcoreError, match="truncated: PT_LOAD"):
        vmcore.ElfCore(str(tmp_path / "short"))
    (tmp_path / "tiny").write_bytes(raw[:40])
    with pytest.raises(vmcore.VmcoreError, match="truncated"):
        vmcore.ElfCore(str(tmp_path / "tiny"))
    (tmp_path / "nonote").write_bytes(raw)
    with vmcore.ElfCore(str(tmp_path / "nonote")) as core, pytest.raises(vmcore.VmcoreError, match="no VMCOREINFO note"):
        core.vmcoreinfo()
    with pytest.raises(vmcore.VmcoreError, match="cannot open"):
        vmcore.ElfCore(str(tmp_path / "absent"))


# ---- virtual to physical ----------------------------------------------------------------------

@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("page_size", [4096, 2 << 20, 1 << 30])
def test_page_walk_page_sizes_and_levels(tmp_path, levels, page_size):
    kernel = vb.Kernel(levels=levels, ram=((0x1000000, 0x800000),))
    target = 0x1400000 if page_size <= (2 << 20) else 0
    vaddr = 0xffffc90000000000 if page_size != 1 << 30 else 0xff11000000000000 if levels == 5 else 0xffff888000000000
    kernel.pt.map(vaddr, target, page_size if page_size > 4096 else 0x3000, page_size)
    marker = os.urandom(64)
    kernel.mem.write(0x1401ff0 if page_size <= (2 << 20) else 0x1401ff0, marker)
    path = vb.write_core(str(tmp_path / "c"), kernel)
    with vmcore.ElfCore(path) as core:
        mem = X86_64Memory(core, core.vmcoreinfo())
        assert mem.levels == levels
        addr = vaddr + 0x1ff0 + (0x1400000 if page_size == 1 << 30 else 0)
        assert mem.vtop(addr) == 0x1401ff0
        assert mem.read(addr, 64) == marker  # crosses a 4 KiB boundary
        with pytest.raises(vmcore.VmcoreError, match="not mapped"):
            mem.vtop(0xffffea0000000000)


def test_kernel_image_uses_phys_base_not_kerneloffset(tmp_path):
    kernel = vb.Kernel(phys_base=0x600000)
    vaddr, paddr = kernel.image_var(16)
    kernel.mem.write(paddr, b"image variable!!")
    kernel.info["KERNELOFFSET"] = "12345000"  # the virtual slide; must not shift the translation
    path = vb.write_core(str(tmp_path / "c"), kernel)
    with vmcore.ElfCore(path) as core:
        mem = X86_64Memory(core, core.vmcoreinfo())
        assert mem.vtop(vaddr) == paddr
        assert mem.read(vaddr, 16) == b"image variable!!"


def test_translation_needs_phys_base_and_init_top_pgt(tmp_path):
    kernel = vb.Kernel()
    del kernel.info["SYMBOL(init_top_pgt)"]
    path = vb.write_core(str(tmp_path / "c"), kernel)
    with vmcore.ElfCore(path) as core:
        mem = X86_64Memory(core, core.vmcoreinfo())
        with pytest.raises(vmcore.VmcoreError, match=r"lacks SYMBOL\(init_top_pgt\)"):
            mem.vtop(0xffff888000001000)
    del kernel.info["NUMBER(phys_base)"]
    path = vb.write_core(str(tmp_path / "d"), kernel)
    with vmcore.ElfCore(path) as core, pytest.raises(vmcore.VmcoreError, match=r"lacks NUMBER\(phys_base\)"):
        X86_64Memory(core, core.vmcoreinfo())


# ---- the lockless printk ringbuffer -----------------------------------------------------------

@pytest.mark.parametrize("where", ["direct", "vmalloc", "huge", "image"])
def test_log_where_the_ring_lives(tmp_path, where):
    ring = filled_ring(10, count_bits=5, size_bits=10)
    path, dummy = build(tmp_path, ring, where=where)
    log = kernel_log(path)
    assert log["format"] == "lockless" and log["osrelease"] == "6.1.0-test"
    assert [(r["seq"], r["ts_nsec"], r["text"].encode()) for r in log["records"]] == ring.expected()
    assert len(log["records"]) == 10


@pytest.mark.parametrize("exact_end_wraps", [False, True])
@pytest.mark.parametrize("n", [1, 17, 40, 333])
def test_log_wraps_data_and_descriptor_rings(tmp_path, exact_end_wraps, n):
    ring = filled_ring(n, count_bits=4, size_bits=9, exact_end_wraps=exact_end_wraps)
    path, dummy = build(tmp_path, ring)
    log = kernel_log(path)
    got = [(r["seq"], r["ts_nsec"], r["text"].encode()) for r in log["records"]]
    assert got == ring.expected()
    assert got[-1][0] == n - 1 and got[-1][2].startswith(b"message %d " % (n - 1))
    seqs = [g[0] for g in got]
    assert seqs == list(range(seqs[0], n))  # the newest records, contiguous, oldest first
    if n > 16:
        assert log["skipped"]["reusable"] >= 0 and len(got) < n


def test_wrapped_block_really_occurs_in_the_tests():
    # Guard for the test above: the ring it uses does place blocks at index 0 of a new wrap.
    ring = filled_ring(40, count_bits=4, size_bits=9)
    wrapped = [r for r in ring.live if (r.begin >> 9) != ((r.next - 1) >> 9)]
    assert wrapped and all(r.next & 511 == ((8 + len(r.text) + 7) & ~7) for r in wrapped)


def test_states_dataless_and_failed_records(tmp_path):
    ring = vb.Ringbuffer(count_bits=4, size_bits=10)
    ring.add(b"first", 1000)
    ring.add(b"", 2000, lpos=(vb.NO_LPOS, vb.NO_LPOS))
    ring.add(b"lost", 3000, lpos=(vb.FAILED_LPOS, vb.FAILED_LPOS))
    ring.add(b"committed", 4000, state=vb.COMMITTED)
    ring.add(b"being written", 5000, state=vb.RESERVED)
    ring.add(b"last", 6000)
    path, dummy = build(tmp_path, ring)
    log = kernel_log(path)
    assert texts(log) == ["first", "", "committed", "last"]
    assert log["skipped"] == {"missing": 0, "reserved": 1, "reusable": 1, "invalid": 1}
    assert log["dmesg"] == "[    0.000001] first\n[    0.000002] \n[    0.000004] committed\n[    0.000006] last\n"


def test_overwritten_descriptor_and_reused_block_are_skipped(tmp_path):
    ring = filled_ring(6, count_bits=4, size_bits=10)
    path, dummy = build(tmp_path, ring)
    info = vmcore.ElfCore(path).vmcoreinfo()
    descs = int(info.entries["SYMBOL(prb)"], 16)  # just to prove keys exist; layout offsets below
    assert descs
    with vmcore.ElfCore(path) as core:
        mem = X86_64Memory(core, core.vmcoreinfo())
        rb = mem.u64(core.vmcoreinfo().symbol("prb"))
        desc_base = mem.u64(rb + 8)
        data_base = mem.u64(rb + 48 + 8)
        second = ring.slots[(ring.tail_id + 2) & 15]
        third = ring.slots[(ring.tail_id + 3) & 15]
        desc_off = core.loads[0][1] + mem.vtop(desc_base + ((ring.tail_id + 2) & 15) * 24) - core.loads[0][0]
        block_off = core.loads[0][1] + mem.vtop(data_base + (third.begin & 1023)) - core.loads[0][0]
    raw = bytearray(open(path, "rb").read())
    struct.pack_into("<Q", raw, desc_off, (vb.FINALIZED << 62) | ((second.id + 16) & vb.ID_MASK))  # a newer id
    struct.pack_into("<Q", raw, block_off, third.id + 1)  # the block now belongs to someone else
    open(path, "wb").write(bytes(raw))
    log = kernel_log(path)
    assert log["skipped"]["missing"] == 1 and log["skipped"]["invalid"] == 1
    assert texts(log) == [t.decode() for s, ts, t in ring.expected() if t not in (second.text, third.text)]


def test_layout_comes_from_vmcoreinfo(tmp_path):
    # Shift every member: a reader with hard-coded 6.1 offsets reads garbage here.
    layout = {"SIZE(prb_desc)": 40, "OFFSET(prb_desc.state_var)": 8, "OFFSET(prb_desc.text_blk_lpos)": 16,
              "SIZE(printk_info)": 120, "OFFSET(printk_info.seq)": 32, "OFFSET(printk_info.ts_nsec)": 48,
              "OFFSET(printk_info.text_len)": 60, "OFFSET(printk_info.caller_id)": 64,
              "OFFSET(printk_ringbuffer.text_data_ring)": 64, "OFFSET(prb_desc_ring.head_id)": 40,
              "OFFSET(prb_desc_ring.tail_id)": 48}
    ring = filled_ring(25, count_bits=4, size_bits=9)
    path, dummy = build(tmp_path, ring, layout=layout)
    log = kernel_log(path)
    assert [(r["seq"], r["ts_nsec"], r["text"].encode()) for r in log["records"]] == ring.expected()
    assert log["records"][-1]["caller"] == "T124"


def test_dmesg_format_caller_and_escapes():
    records = [{"ts_nsec": 123456789012, "text": "a\x1b[31mred\tb\nsecond line é"},
               {"ts_nsec": 999, "text": ""}, {"ts_nsec": 100000 * 10 ** 9, "text": "late"}]
    assert printk.format_dmesg(records) == ("[  123.456789] a\\x1b[31mred\tb\nsecond line é\n[    0.000000] \n"
                                            "[100000.000000] late\n")
    assert printk._caller(0x80000003) == "C3" and printk._caller(42) == "T42"


def test_missing_keys_are_named(tmp_path):
    ring = filled_ring(3)
    path, kernel = build(tmp_path, ring)
    del kernel.info["OFFSET(printk_info.caller_id)"]
    del kernel.info["SIZE(prb_desc)"]
    path = vb.write_core(str(tmp_path / "d"), kernel)
    with pytest.raises(vmcore.VmcoreError, match=r"lacks SIZE\(prb_desc\), OFFSET\(printk_info.caller_id\)"):
        kernel_log(path)
    for key in [k for k in kernel.info if "prb" in k]:
        del kernel.info[key]
    path = vb.write_core(str(tmp_path / "e"), kernel)
    with pytest.raises(vmcore.VmcoreError, match=r"neither SYMBOL\(prb\).*nor SYMBOL\(log_buf\)"):
        kernel_log(path)


def test_corrupt_ring_headers_raise_vmcore_errors(tmp_path):
    ring = filled_ring(20, count_bits=4, size_bits=9)
    path, dummy = build(tmp_path, ring, where="image")
    with vmcore.ElfCore(path) as core:
        mem = X86_64Memory(core, core.vmcoreinfo())
        rb = mem.vtop(mem.u64(core.vmcoreinfo().symbol("prb")))
        rb_off = core.loads[0][1] + rb - core.loads[0][0]
    good = open(path, "rb").read()
    cases = [(0, "<I", 40, "count_bits 40"), (48, "<I", 60, "size_bits 60"), (24, "<Q", ring.tail_id + 100, "head id"),
             (8, "<Q", 0xffffea0000000000, "not mapped"), (56, "<Q", 0x123, "not mapped|not in the dump")]
    for offset, fmt, value, message in cases:
        raw = bytearray(good)
        struct.pack_into(fmt, raw, rb_off + offset, value)
        open(path, "wb").write(bytes(raw))
        with pytest.raises(vmcore.VmcoreError, match=message):
            kernel_log(path)


def test_random_corruption_only_raises_kexec_errors(tmp_path):
    import random
    rnd = random.Random(1234)
    ring = filled_ring(30, count_bits=4, size_bits=9)
    path, dummy = build(tmp_path, ring)
    good = open(path, "rb").read()
    outcomes = set()
    for trial in range(150):
        raw = bytearray(good)
        # Hit the headers and notes most of the time, the RAM (ring data, page tables) otherwise.
        span = 4096 if trial % 2 else len(raw)
        for dummy_k in range(rnd.randint(1, 12)):
            raw[rnd.randrange(span)] = rnd.randrange(256)
        open(path, "wb").write(bytes(raw))
        try:
            kernel_log(path)
            outcomes.add("read")
        except KexecError:
            outcomes.add("refused")
    assert outcomes == {"read", "refused"}


# ---- the pre-5.10 log_buf ---------------------------------------------------------------------

def _legacy(kernel, entries, first, nxt, buf_len=512):
    hdr = 16
    buf = bytearray(buf_len)
    for index, ts, text in entries:
        if text is None:  # the wrap marker: a zero length header
            continue
        length = (hdr + len(text) + 7) & ~7
        struct.pack_into("<QHHHBB", buf, index, ts, length, len(text), 0, 0, 0)
        buf[index + hdr:index + hdr + len(text)] = text
    base_v, base_p = kernel.image_var(buf_len, 4096)
    kernel.mem.write(base_p, bytes(buf))
    for name, fmt, value in (("log_buf", "Q", base_v), ("log_buf_len", "I", buf_len), ("log_first_idx", "I", first),
                             ("log_next_idx", "I", nxt)):
        v, p = kernel.image_var(8)
        kernel.mem.put(p, fmt, value)
        kernel.info["SYMBOL(%s)" % name] = "%x" % v
    kernel.info.update({"SIZE(printk_log)": "16", "OFFSET(printk_log.ts_nsec)": "0", "OFFSET(printk_log.len)": "8",
                        "OFFSET(printk_log.text_len)": "10"})


def test_legacy_log_buf_with_wrap(tmp_path):
    kernel = vb.Kernel()
    # Records at 400 (40 bytes) and 440 (24) fill the end; 464 holds the zero-length wrap marker;
    # then 0 and 24 (24 bytes each).
    _legacy(kernel, [(400, 5000, b"old one" * 3), (440, 6000, b"old two"), (0, 7000, b"new one"), (24, 8000, b"new two")],
            first=400, nxt=48)
    path = vb.write_core(str(tmp_path / "c"), kernel)
    log = kernel_log(path)
    assert log["format"] == "legacy"
    assert texts(log) == ["old oneold oneold one", "old two", "new one", "new two"]
    assert log["dmesg"].splitlines()[-1] == "[    0.000008] new two"


def test_legacy_log_buf_corrupt(tmp_path):
    kernel = vb.Kernel()
    _legacy(kernel, [(0, 1, b"x" * 8)], first=0, nxt=200)  # next index past every record
    path = vb.write_core(str(tmp_path / "c"), kernel)
    with pytest.raises(vmcore.VmcoreError, match="log buffer looks corrupt"):
        kernel_log(path)


# ---- a real crash -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_core(tmp_path_factory):
    path = tmp_path_factory.mktemp("real") / "debian-6.1.0-54-sysrq.core"
    with lzma.open(os.path.join(FIXTURES, "debian-6.1.0-54-sysrq.core.xz")) as f:
        path.write_bytes(f.read())
    return str(path)


def test_real_crash_log_matches_the_console(real_core):
    log = kernel_log(real_core)
    lines = log["dmesg"].splitlines()
    with open(os.path.join(FIXTURES, "debian-6.1.0-54-sysrq.console.txt"), encoding="utf-8") as f:
        console = f.read().splitlines()
    assert log["osrelease"] == "6.1.0-54-amd64"
    assert len(log["records"]) == 529 and log["skipped"] == {"missing": 0, "reserved": 0, "reusable": 1, "invalid": 0}
    assert lines[0].startswith("[    0.000000] Linux version 6.1.0-54-amd64")
    assert lines[-len(console):] == console  # the serial console's last 32 lines, the é included
    assert "[  215.849618] sysrq: Trigger a crash" in lines


def test_real_crash_page_walk_agrees_with_phys_base(real_core):
    with vmcore.ElfCore(real_core) as core:
        info = core.vmcoreinfo()
        mem = X86_64Memory(core, info)
        prb = info.symbol("prb")
        assert mem._walk(prb) == mem.vtop(prb) == 0x432643e0
        assert mem.vtop(info.symbol("mem_section")) == 0x7ffd5000  # direct map, through the page tables
