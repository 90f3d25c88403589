"""The ppc64le purgatory: PPC64 relocations type by type, the shipped object, a cross-check of
our linker against GNU ld for powerpc64le, and what the linked segment carries."""

import hashlib
import os
import struct
import subprocess
import sys

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import purgatory as purg
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.ppc64le import purgatory as ppurg
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.ppc64le import purgatory_blob
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.ppc64le import reloc as r
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import elf
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import PurgatoryError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.purgatory import regions

from tests.unit.test_purgatory import need

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOC = 0x2000_8000


@pytest.fixture(scope="module")
def obj():
    return ppurg.load_object()


def patched(rtype, s, a, p, word=0, toc=TOC):
    """The 4 bytes at a field after applying one relocation to ``word`` (the little-endian
    instruction or datum already there), as a fresh image would hold them."""
    image = bytearray(struct.pack("<I", word) + bytes(8))
    r.store(image, 0, *r.relocate(rtype, s, a, p, toc))
    return image


def half(image):
    return struct.unpack_from("<H", image, 0)[0]


# ---------------------------------------------------------------------------------------------
# relocation types, one by one (64-bit ELF V2 ABI 3.5.3: S + A, - P, - .TOC., #lo/#hi/#ha)

def test_addr64_and_rel64_and_toc():
    assert struct.unpack_from("<Q", patched(r.R_PPC64_ADDR64, 0x1234_5678_9ABC_0000, 0x10, 0))[0] == 0x1234_5678_9ABC_0010
    assert struct.unpack_from("<Q", patched(r.R_PPC64_REL64, 0x1000, 0, 0x3000))[0] == (1 << 64) - 0x2000
    assert struct.unpack_from("<Q", patched(r.R_PPC64_TOC, 0xDEAD, 8, 0))[0] == TOC + 8  # S is ignored
    with pytest.raises(PurgatoryError, match="64 bits"):
        r.relocate(r.R_PPC64_ADDR64, 1 << 64, 0, 0, TOC)


def test_addr32_and_rel32():
    assert struct.unpack_from("<I", patched(r.R_PPC64_ADDR32, 0xFFFF_FFF0, 0xF, 0))[0] == 0xFFFF_FFFF
    assert struct.unpack_from("<i", patched(r.R_PPC64_REL32, 0x1000, 0, 0x9000))[0] == -0x8000
    with pytest.raises(PurgatoryError, match="below 4 GiB"):
        r.relocate(r.R_PPC64_ADDR32, 1 << 32, 0, 0, TOC)
    with pytest.raises(PurgatoryError, match="signed 32-bit"):
        r.relocate(r.R_PPC64_REL32, 0x8000_0000, 0, 0, TOC)
    assert r.relocate(r.R_PPC64_REL32, 0x7FFF_FFFF, 0, 0, TOC) == ("u32", 0x7FFF_FFFF)


def test_rel24_replaces_only_the_displacement_bits():
    bl = 0x48000001  # bl with LK set: opcode 18 and LK must survive
    out = struct.unpack_from("<I", patched(r.R_PPC64_REL24, 0x2000_1000, 0, 0x2000_0000, word=bl))[0]
    assert out == 0x48001001
    back = struct.unpack_from("<I", patched(r.R_PPC64_REL24, 0x2000_0000, 0, 0x2000_0100, word=bl))[0]
    assert back == 0x4BFFFF01  # -0x100, sign in bit 25
    assert r.relocate(r.R_PPC64_REL24, 0x1FF_FFFC, 0, 0, TOC) == ("branch24", 0x1FF_FFFC)
    assert r.relocate(r.R_PPC64_REL24, 0, 0, 0x200_0000, TOC) == ("branch24", -0x200_0000)
    for s, p in ((0x200_0000, 0), (0, 0x200_0004), (2, 0)):
        with pytest.raises(PurgatoryError, match="cannot reach"):
            r.relocate(r.R_PPC64_REL24, s, 0, p, TOC)


def test_rel14_keeps_the_condition_bits():
    beq = 0x41820000  # beq cr0,.
    out = struct.unpack_from("<I", patched(r.R_PPC64_REL14, 0x1100, 0, 0x1000, word=beq))[0]
    assert out == 0x41820100
    with pytest.raises(PurgatoryError, match="cannot reach"):
        r.relocate(r.R_PPC64_REL14, 0x9000, 0, 0x1000, TOC)


@pytest.mark.parametrize("rtype,base", [(r.R_PPC64_TOC16_LO, TOC), (r.R_PPC64_REL16_LO, 0x2000_0040)])
def test_lo_is_the_low_half_without_a_check(rtype, base):
    s = base + 0x1_2345
    value = 0x1_2345 if rtype == r.R_PPC64_TOC16_LO else s - 0x2000_0040
    assert half(patched(rtype, s, 0, 0x2000_0040)) == value & 0xFFFF


@pytest.mark.parametrize("rtype,p", [(r.R_PPC64_TOC16_HA, 0), (r.R_PPC64_REL16_HA, TOC)])
def test_ha_rounds_for_the_sign_of_the_low_half(rtype, p):
    # p is chosen so that "S - base" is the same for both: base is .TOC. or P.
    for offset, expected in ((0x1_7FFF, 0x1), (0x1_8000, 0x2), (-0x8000, 0x0), (-0x8001, 0xFFFF)):
        assert half(patched(rtype, TOC + offset, 0, p)) == expected
    with pytest.raises(PurgatoryError, match="32 bits"):
        r.relocate(rtype, TOC + 0x7FFF_8000, 0, p, TOC)


@pytest.mark.parametrize("rtype", [r.R_PPC64_TOC16_HI, r.R_PPC64_REL16_HI])
def test_hi_is_the_plain_high_half(rtype):
    p = 0 if rtype == r.R_PPC64_TOC16_HI else TOC
    assert half(patched(rtype, TOC + 0x1_8000, 0, p)) == 0x1
    assert half(patched(rtype, TOC - 1, 0, p)) == 0xFFFF
    with pytest.raises(PurgatoryError, match="32 bits"):
        r.relocate(rtype, TOC + (1 << 31), 0, p, TOC)


@pytest.mark.parametrize("rtype", [r.R_PPC64_TOC16, r.R_PPC64_REL16])
def test_plain_16_bit_fields_are_checked(rtype):
    p = 0 if rtype == r.R_PPC64_TOC16 else TOC
    assert half(patched(rtype, TOC - 0x8000, 0, p)) == 0x8000
    assert half(patched(rtype, TOC + 0x7FFF, 0, p)) == 0x7FFF
    with pytest.raises(PurgatoryError, match="signed 16-bit"):
        r.relocate(rtype, TOC + 0x8000, 0, p, TOC)


def test_ds_forms_keep_the_low_two_opcode_bits_and_need_multiples_of_four():
    ld = 0xE8640001  # ld r3,0(r4) with the DS field's low bits 01 (ldu)
    out = struct.unpack_from("<I", patched(r.R_PPC64_TOC16_LO_DS, TOC + 0x1_2344, 0, 0, word=ld))[0]
    assert out == 0xE8642345
    out = struct.unpack_from("<I", patched(r.R_PPC64_TOC16_DS, TOC - 8, 0, 0, word=ld))[0]
    assert out == 0xE864FFF9
    for rtype in (r.R_PPC64_TOC16_LO_DS, r.R_PPC64_TOC16_DS):
        with pytest.raises(PurgatoryError, match="multiple of 4"):
            r.relocate(rtype, TOC + 2, 0, 0, TOC)
    with pytest.raises(PurgatoryError, match="signed 16-bit"):
        r.relocate(r.R_PPC64_TOC16_DS, TOC + 0x8000, 0, 0, TOC)


def test_unknown_types_are_refused_by_name():
    with pytest.raises(PurgatoryError, match="type 99"):
        r.relocate(99, 0, 0, 0, TOC)
    assert r.RELOCATOR.width(r.R_PPC64_TOC16_HA) == 2 and r.RELOCATOR.width(r.R_PPC64_ADDR64) == 8
    assert r.RELOCATOR.width(r.R_PPC64_REL24) == 4


def test_local_entry_offsets_and_the_branch_target():
    assert [r.local_entry_offset(code << 5) for code in range(7)] == [0, 0, 4, 8, 16, 32, 64]
    with pytest.raises(PurgatoryError, match="reserved"):
        r.local_entry_offset(7 << 5)

    class Sym:
        shndx = 1
        other = 3 << 5

    assert r.RELOCATOR.target(r.R_PPC64_REL24, Sym, 0x1000) == 0x1008  # past the TOC set-up
    assert r.RELOCATOR.target(r.R_PPC64_TOC16_HA, Sym, 0x1000) == 0x1000  # data refers to the symbol
    assert r.RELOCATOR.linker_symbol(".TOC.", None, 0x4000_0000) == 0x4000_8000
    assert r.RELOCATOR.linker_symbol("memcpy", None, 0) is None


# ---------------------------------------------------------------------------------------------
# the shipped object

def test_shipped_object_is_intact_and_has_what_the_loader_writes(obj):
    blob = purgatory_blob.object_bytes()
    assert hashlib.sha256(blob).hexdigest() == purgatory_blob.OBJECT_SHA256
    assert obj.elf.e_machine == elf.EM_PPC64 and obj.elf.e_flags & 3 == 2  # ELFv2
    assert obj.relocation_types() <= {r.R_PPC64_REL24, r.R_PPC64_TOC16_HA, r.R_PPC64_TOC16_LO,
                                      r.R_PPC64_TOC16_LO_DS, r.R_PPC64_REL16_HA, r.R_PPC64_REL16_LO}
    for name, size in ((ppurg.KERNEL_HEAD_SYMBOL, 0xFC), (ppurg.KERNEL_SYMBOL, 8), (ppurg.ENTRY_SYMBOL, 8),
                       (ppurg.DEVICE_TREE_SYMBOL, 8), (ppurg.RUN_AT_LOAD_SYMBOL, 8), (ppurg.VTERM_SYMBOL, 8),
                       (regions.REGIONS_SYMBOL, 16 * 48)):
        assert obj.symbol(name).size == size, name
    # The head follows the first word of purgatory_start; together they are what goes to 0.
    assert obj.symbol_offset(ppurg.KERNEL_HEAD_SYMBOL) == obj.symbol_offset(purg.ENTRY_SYMBOL) + 4
    assert obj.symbol_offset(purg.ENTRY_SYMBOL) % 256 == 0
    assert obj.size - obj.filesz >= 16384  # the stack is .bss, left to the kernel's zero fill
    assert b"\r\nfleetboot purgatory: sha256 mismatch in segment \0" in blob


def test_no_floating_point_or_vector_instructions(obj):
    """kexec's real mode may have MSR[FP/VEC/VSX] off: such an instruction would trap."""
    need("powerpc64le-linux-gnu-objdump")
    path = os.path.join(REPO, ".build", "ppc64le-purgatory.o")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(purgatory_blob.object_bytes())
    text = subprocess.run(["powerpc64le-linux-gnu-objdump", "-d", path], capture_output=True, text=True,
                          check=True).stdout
    mnemonics = {line.split("\t")[2].split()[0] for line in text.splitlines() if line.count("\t") >= 2}
    assert "sc" in mnemonics and "rfid" in mnemonics and "bl" in mnemonics
    bad = {m for m in mnemonics if m[:2] in ("lf", "st") and m[:3] in ("lfd", "lfs", "stf")
           or m.startswith(("lxv", "stxv", "lvx", "stvx", "xxl", "vperm", "mtvsr", "mfvsr", "fmr"))}
    assert not bad


def test_build_check_says_module_is_fresh():
    need("powerpc64le-linux-gnu-gcc")
    pytest.importorskip("elftools")
    res = subprocess.run([sys.executable, os.path.join(REPO, "purgatory", "build.py"), "--check", "ppc64le"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "up to date" in res.stdout or "skipped" in res.stdout


# ---------------------------------------------------------------------------------------------
# linking

@pytest.mark.parametrize("base", [0x1000_0000, 0x3FFB_0000, 0x1_2345_0000])
def test_every_relocation_lands_where_the_abi_says(obj, base):
    """Decode every patched field back and recompute it from the symbol table, independently
    of reloc.py: a branch lands on its target's local entry, TOC pairs rebuild S - .TOC."""
    image = obj.link(base)
    f = obj.elf
    syms = f.symbols()
    toc = base + 0x8000
    checked = set()
    for rsec in f.relocation_sections():
        target = f.sections[rsec.sh_info]
        if target.index not in obj.offsets:
            continue
        for rel in f.relocations(rsec):
            sym = syms[rel.sym]
            if sym.shndx == elf.SHN_UNDEF:
                s_val = toc  # .TOC.
            else:
                s_val = base + obj.offsets[sym.shndx] + sym.value
            off = obj.offsets[target.index] + rel.offset
            place = base + off
            want = s_val + rel.addend
            if rel.type == r.R_PPC64_REL24:
                insn = struct.unpack_from("<I", image, off)[0]
                disp = insn & 0x03FFFFFC
                disp -= (disp & 0x02000000) << 1
                local = ((1 << ((sym.other >> 5) & 7)) >> 2) << 2 if sym.shndx != elf.SHN_UNDEF else 0
                assert place + disp == want + local
            elif rel.type in (r.R_PPC64_TOC16_HA, r.R_PPC64_REL16_HA):
                v = want - (toc if rel.type == r.R_PPC64_TOC16_HA else place)
                assert struct.unpack_from("<H", image, off)[0] == ((v + 0x8000) >> 16) & 0xFFFF
            elif rel.type in (r.R_PPC64_TOC16_LO, r.R_PPC64_REL16_LO):
                v = want - (toc if rel.type == r.R_PPC64_TOC16_LO else place)
                assert struct.unpack_from("<H", image, off)[0] == v & 0xFFFF
            else:
                assert rel.type == r.R_PPC64_TOC16_LO_DS
                assert struct.unpack_from("<H", image, off)[0] & 0xFFFC == (want - toc) & 0xFFFC
            checked.add(rel.type)
    assert checked == {r.R_PPC64_REL24, r.R_PPC64_TOC16_HA, r.R_PPC64_TOC16_LO, r.R_PPC64_TOC16_LO_DS,
                       r.R_PPC64_REL16_HA, r.R_PPC64_REL16_LO}


@pytest.mark.parametrize("base", [0x8000_0000, 0x1_2345_0000])
def test_matches_gnu_ld(obj, tmp_path, base):
    """Link the same object with GNU ld (powerpc64le) at the same section addresses and .TOC.:
    identical bytes.  Bases of 2 GiB and more, where ld cannot shorten the TOC set-up of
    global entry points to absolute lis/addi pairs (a legal optimisation we do not make)."""
    need("powerpc64le-linux-gnu-ld")
    need("powerpc64le-linux-gnu-objcopy")
    (tmp_path / "p.ro").write_bytes(purgatory_blob.object_bytes())
    lines = ["SECTIONS {"]
    for sec in obj.elf.sections:
        if sec.index in obj.offsets:
            lines.append("  %s 0x%x : { *(%s) }" % (sec.name, base + obj.offsets[sec.index], sec.name))
    lines.append("  .TOC. = 0x%x;" % (base + 0x8000))
    lines.append("  /DISCARD/ : { *(.comment) *(.note.GNU-stack) }")
    lines.append("}")
    (tmp_path / "link.ld").write_text("\n".join(lines) + "\n")
    subprocess.run(["powerpc64le-linux-gnu-ld", "-static", "-nostdlib", "--no-toc-optimize", "-e",
                    purg.ENTRY_SYMBOL, "-T", "link.ld", "-o", "p.elf", "p.ro"], cwd=str(tmp_path), check=True,
                   capture_output=True)
    subprocess.run(["powerpc64le-linux-gnu-objcopy", "-O", "binary", "-R", ".bss", "p.elf", "p.bin"],
                   cwd=str(tmp_path), check=True)
    theirs = (tmp_path / "p.bin").read_bytes()
    ours = bytes(obj.link(base))
    assert ours[:len(theirs)] == theirs
    assert not any(ours[len(theirs):])  # only the alignment before .bss follows
    by_name = {s.name: s.value for s in elf.ElfFile((tmp_path / "p.elf").read_bytes()).symbols()}
    assert by_name[".TOC."] == base + 0x8000
    for name in (purg.ENTRY_SYMBOL, ppurg.KERNEL_HEAD_SYMBOL, ppurg.DEVICE_TREE_SYMBOL, regions.REGIONS_SYMBOL):
        assert by_name[name] == base + obj.symbol_offset(name), name
