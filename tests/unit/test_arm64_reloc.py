"""The AArch64 relocator, type by type, against GNU ld: each relocation is assembled into a
one-instruction object, linked by aarch64-linux-gnu-ld with the symbol at a chosen address, and
the word ld writes must be the word our relocator writes; where ld refuses (out of range,
misaligned), ours must refuse too."""

import os
import shutil
import struct
import subprocess

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64 import reloc as r
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import elf
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import PurgatoryError

AS = "aarch64-linux-gnu-as"
LD = "aarch64-linux-gnu-ld"
TEXT = 0x40080000

# (relocation, assembler line, targets: addresses of `target` that ld accepts)
CASES = [
    (r.R_AARCH64_ABS64, ".xword target + 8", [0x1234, 0xFFFF_8000_1234_5678]),
    (r.R_AARCH64_ABS32, ".word target", [0x8000_0000, 0xFFFF_FFFF]),
    (r.R_AARCH64_ABS16, ".hword target", [0x7FFF, 0xFFFF]),
    (r.R_AARCH64_PREL64, ".xword target - .", [0x10, 0xFFFF_0000_0000_0000]),
    (r.R_AARCH64_PREL32, ".word target - .", [TEXT + 0x7FFF_0000, TEXT - 0x4000_0000]),
    (r.R_AARCH64_PREL16, ".hword target - .", [TEXT + 0x7000, TEXT - 0x7000]),
    (r.R_AARCH64_LD_PREL_LO19, "ldr x0, target", [TEXT + 0xFFFFC, TEXT - 0x100000]),
    (r.R_AARCH64_ADR_PREL_LO21, "adr x0, target", [TEXT + 0xFFFFF, TEXT - 0x100000, TEXT + 3]),
    (r.R_AARCH64_ADR_PREL_PG_HI21, "adrp x0, target", [TEXT + 0x1234, TEXT + 0xFFFF_F000, 0x1000]),
    (r.R_AARCH64_ADR_PREL_PG_HI21_NC, "adrp x0, :pg_hi21_nc:target", [TEXT + 0x2_0000_0000, 0x5000]),
    (r.R_AARCH64_ADD_ABS_LO12_NC, "add x0, x0, :lo12:target", [0x1234_5FFF, 0x800]),
    (r.R_AARCH64_LDST8_ABS_LO12_NC, "ldrb w0, [x0, :lo12:target]", [0x4567, 0xFFF]),
    (r.R_AARCH64_LDST16_ABS_LO12_NC, "ldrh w0, [x0, :lo12:target]", [0x4566, 0xFFE]),
    (r.R_AARCH64_LDST32_ABS_LO12_NC, "ldr w0, [x0, :lo12:target]", [0x4564, 0xFFC]),
    (r.R_AARCH64_LDST64_ABS_LO12_NC, "ldr x0, [x0, :lo12:target]", [0x4568, 0xFF8]),
    (r.R_AARCH64_LDST128_ABS_LO12_NC, "ldr q0, [x0, :lo12:target]", [0x4560, 0xFF0]),
    (r.R_AARCH64_TSTBR14, "tbz x0, #3, target", [TEXT + 0x7FFC, TEXT - 0x8000]),
    (r.R_AARCH64_CONDBR19, "b.eq target", [TEXT + 0xFFFFC, TEXT - 0x100000]),
    (r.R_AARCH64_JUMP26, "b target", [TEXT + 0x7FF_FFFC, TEXT - 0x800_0000]),
    (r.R_AARCH64_CALL26, "bl target", [TEXT + 0x40, TEXT - 0x800_0000]),
]

# (relocation, assembler line, a target ld refuses and so must we)
REFUSED = [
    (r.R_AARCH64_ABS32, ".word target", 0x1_0000_0000),
    (r.R_AARCH64_ABS16, ".hword target", 0x1_0000),
    (r.R_AARCH64_PREL32, ".word target - .", TEXT + 0x1_0000_0000),
    (r.R_AARCH64_PREL16, ".hword target - .", TEXT + 0x1_0000),
    (r.R_AARCH64_LD_PREL_LO19, "ldr x0, target", TEXT + 0x100000),
    (r.R_AARCH64_ADR_PREL_LO21, "adr x0, target", TEXT - 0x100001),
    (r.R_AARCH64_ADR_PREL_PG_HI21, "adrp x0, target", TEXT + 0x1_0000_0000),
    (r.R_AARCH64_LDST16_ABS_LO12_NC, "ldrh w0, [x0, :lo12:target]", 0x4567),
    (r.R_AARCH64_LDST32_ABS_LO12_NC, "ldr w0, [x0, :lo12:target]", 0x4566),
    (r.R_AARCH64_LDST64_ABS_LO12_NC, "ldr x0, [x0, :lo12:target]", 0x4564),
    (r.R_AARCH64_LDST128_ABS_LO12_NC, "ldr q0, [x0, :lo12:target]", 0x4568),
    (r.R_AARCH64_TSTBR14, "tbz x0, #3, target", TEXT + 0x8000),
    (r.R_AARCH64_CONDBR19, "b.eq target", TEXT - 0x100004),
]
# Where GNU ld does not refuse but works around: a branch beyond 128 MiB gets a veneer (a stub
# ld adds), a misaligned branch target is silently rounded.  Our linker adds no code: it refuses.
NO_VENEERS = [
    (r.R_AARCH64_JUMP26, "b target", TEXT + 0x800_0000),
    (r.R_AARCH64_CALL26, "bl target", TEXT - 0x800_0004),
    (r.R_AARCH64_CALL26, "bl target", TEXT + 0x42),
]


@pytest.fixture(scope="module")
def tools():
    for tool in (AS, LD):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed (make deps)" % tool)


def assemble(tmp_path, line):
    """(object bytes, offset of the patched place in .text, the one relocation)."""
    src = tmp_path / "x.s"
    src.write_text("\t.text\n\t.globl _start\n_start:\n\t%s\n" % line)
    subprocess.run([AS, "-o", str(tmp_path / "x.o"), str(src)], check=True)
    blob = (tmp_path / "x.o").read_bytes()
    f = elf.ElfFile(blob)
    rels = [rel for rsec in f.relocation_sections() for rel in f.relocations(rsec)]
    assert len(rels) == 1, rels
    text = f.section_by_name(".text")
    return bytearray(text.data()), rels[0]


def gnu_ld(tmp_path, target):
    """(exit status, .text bytes or ld's complaint) of linking x.o at TEXT with target defined."""
    res = subprocess.run([LD, "-static", "-nostdlib", "-Ttext=%#x" % TEXT, "--defsym=target=%#x" % target,
                          "-o", str(tmp_path / "x.elf"), str(tmp_path / "x.o")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if res.returncode:
        return res.returncode, res.stderr
    f = elf.ElfFile((tmp_path / "x.elf").read_bytes())
    return 0, bytes(f.section_by_name(".text").data())


def ours(text, rel, target):
    image = bytearray(text)
    r.RELOCATOR.apply(image, rel.offset, rel.type, target, rel.addend, TEXT + rel.offset, None, TEXT)
    return bytes(image)


@pytest.mark.parametrize("rtype,line,targets", CASES, ids=[r.RELOCATION_NAMES[c[0]] for c in CASES])
def test_each_relocation_writes_what_gnu_ld_writes(tools, tmp_path, rtype, line, targets):
    text, rel = assemble(tmp_path, line)
    assert rel.type == rtype, r.RELOCATION_NAMES.get(rel.type, rel.type)
    for target in targets:
        status, theirs = gnu_ld(tmp_path, target)
        assert status == 0, theirs
        assert ours(text, rel, target) == theirs, hex(target)


@pytest.mark.parametrize("rtype,line,target", REFUSED, ids=[r.RELOCATION_NAMES[c[0]] for c in REFUSED])
def test_what_gnu_ld_refuses_is_refused(tools, tmp_path, rtype, line, target):
    text, rel = assemble(tmp_path, line)
    assert rel.type == rtype
    status, complaint = gnu_ld(tmp_path, target)
    assert status != 0 and ("truncated" in complaint or "alignment" in complaint or "misaligned" in complaint), complaint
    with pytest.raises(PurgatoryError, match="cannot reach|does not fit|not aligned|not 4-byte aligned"):
        ours(text, rel, target)


@pytest.mark.parametrize("rtype,line,target", NO_VENEERS)
def test_branches_ld_would_patch_with_a_veneer_are_refused(tools, tmp_path, rtype, line, target):
    text, rel = assemble(tmp_path, line)
    assert rel.type == rtype
    status, theirs = gnu_ld(tmp_path, target)
    assert status == 0 and len(theirs) > len(text) or theirs[:4] != ours_or_none(text, rel, target)
    with pytest.raises(PurgatoryError, match="cannot reach|not 4-byte aligned"):
        ours(text, rel, target)


def ours_or_none(text, rel, target):
    try:
        return ours(text, rel, target)[:4]
    except PurgatoryError:
        return None


def test_unknown_type_and_misplaced_instruction():
    with pytest.raises(PurgatoryError, match="does not support"):
        r.patch_instruction(1024, 0, 0, 0, 0)
    with pytest.raises(PurgatoryError, match="not 4-byte aligned"):
        r.RELOCATOR.apply(bytearray(8), 2, r.R_AARCH64_CALL26, 0x1000, 0, 0x2, None, 0)
    assert r.RELOCATOR.width(r.R_AARCH64_ABS64) == 8 and r.RELOCATOR.width(r.R_AARCH64_PREL16) == 2
    assert r.RELOCATOR.width(r.R_AARCH64_CALL26) == 4


def test_adrp_uses_4k_pages_whatever_the_kernel_page_size():
    insn = struct.unpack("<I", bytes.fromhex("00000090"))[0]  # adrp x0, .
    # Same 4 KiB page: 0; the next 4 KiB page: 1, even within one 64 KiB page.
    assert r.patch_instruction(r.R_AARCH64_ADR_PREL_PG_HI21, insn, 0x10FFF, 0, 0x10000) == insn
    patched = r.patch_instruction(r.R_AARCH64_ADR_PREL_PG_HI21, insn, 0x11000, 0, 0x10FFF)
    assert (patched >> 29) & 3 == 1 and (patched >> 5) & 0x7FFFF == 0
    assert os.path.basename(__file__).startswith("test_")
