"""The stdlib ELF reader against pyelftools on real and synthetic objects, and on broken input."""

import io
import mmap
import os
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import elf
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import ImageFormatError

elftools = pytest.importorskip("elftools")
from elftools.elf.elffile import ELFFile  # noqa: E402  (after importorskip on purpose)
from elftools.elf.relocation import RelocationSection  # noqa: E402
from elftools.elf.sections import NoteSection, SymbolTableSection  # noqa: E402

C_SOURCE = r"""
extern int ext_value;
extern void ext_call(int);
static int counter;
int table[4] = {1, 2, 3, 4};
int *table_ptr = &table[2];
const char message[] = "hello";
__attribute__((section(".note.fleetboot"), aligned(4)))
const unsigned int note[] = {9, 4, 0x1234, 0x65656c66, 0x6f6f6274, 0x74, 0xdeadbeef};
int bump(int x) { counter += x; ext_call(ext_value); return counter + table[x & 3]; }
"""


# ---------------------------------------------------------------------------------------------
# synthetic objects: any class and byte order, built by hand so no cross compiler is needed

def build_synthetic(elfclass=64, little=True, machine=elf.EM_PPC64):
    """A relocatable-looking ELF with .text, .bss, .symtab, .strtab, .rela.text, a note, a PT_LOAD."""
    bo = "<" if little else ">"
    text = bytes(range(32))
    note_desc = b"\x01\x02\x03\x04\x05"
    note = struct.pack(bo + "III", 6, len(note_desc), 0x42) + b"Linux\0\0\0" + note_desc + b"\0" * 3
    strtab = b"\0start\0counter\0ext\0"
    shstrtab = b"\0.text\0.bss\0.symtab\0.strtab\0.rela.text\0.note.x\0.shstrtab\0"

    def sname(n):
        return shstrtab.index(n.encode() + b"\0")

    if elfclass == 64:
        symfmt, relafmt = bo + "IBBHQQ", bo + "QQq"
        syms = [struct.pack(symfmt, 0, 0, 0, 0, 0, 0),
                struct.pack(symfmt, 0, 3, 0, 1, 0, 0),  # section symbol for .text
                struct.pack(symfmt, strtab.index(b"counter"), (0 << 4) | 1, 0, 2, 0, 8),
                struct.pack(symfmt, strtab.index(b"start"), (1 << 4) | 2, 0, 1, 4, 16),
                struct.pack(symfmt, strtab.index(b"ext"), (1 << 4) | 0, 0, 0, 0, 0)]
        relas = [struct.pack(relafmt, 8, (4 << 32) | 1, -4), struct.pack(relafmt, 16, (2 << 32) | 2, 100)]
        ehfmt, phfmt, shfmt = bo + "16sHHIQQQIHHHHHH", bo + "IIQQQQQQ", bo + "IIQQQQIIQQ"
    else:
        symfmt, relafmt = bo + "IIIBBH", bo + "IIi"
        syms = [struct.pack(symfmt, 0, 0, 0, 0, 0, 0),
                struct.pack(symfmt, 0, 0, 0, 3, 0, 1),
                struct.pack(symfmt, strtab.index(b"counter"), 0, 8, (0 << 4) | 1, 0, 2),
                struct.pack(symfmt, strtab.index(b"start"), 4, 16, (1 << 4) | 2, 0, 1),
                struct.pack(symfmt, strtab.index(b"ext"), 0, 0, (1 << 4) | 0, 0, 0)]
        relas = [struct.pack(relafmt, 8, (4 << 8) | 1, -4), struct.pack(relafmt, 16, (2 << 8) | 2, 100)]
        ehfmt, phfmt, shfmt = bo + "16sHHIIIIIHHHHHH", bo + "IIIIIIII", bo + "IIIIIIIIII"
    symtab = b"".join(syms)
    rela = b"".join(relas)
    ehsize, phentsize, shentsize = struct.calcsize(ehfmt), struct.calcsize(phfmt), struct.calcsize(shfmt)
    phoff = ehsize
    off = phoff + 2 * phentsize
    blobs = []

    def place(blob, align=8):
        nonlocal off
        off = (off + align - 1) & ~(align - 1)
        where = off
        blobs.append((where, blob))
        off += len(blob)
        return where

    text_off = place(text, 16)
    note_off = place(note, 4)
    sym_off = place(symtab)
    str_off = place(strtab, 1)
    rela_off = place(rela)
    shstr_off = place(shstrtab, 1)
    shoff = (off + 7) & ~7
    symsz, relasz = len(syms[0]), len(relas[0])
    # name type flags addr offset size link info align entsize
    shdrs = [
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (sname(".text"), elf.SHT_PROGBITS, 6, 0x1000, text_off, len(text), 0, 0, 16, 0),
        (sname(".bss"), elf.SHT_NOBITS, 3, 0x1020, text_off + len(text), 64, 0, 0, 8, 0),
        (sname(".symtab"), elf.SHT_SYMTAB, 0, 0, sym_off, len(symtab), 4, 3, 8, symsz),
        (sname(".strtab"), elf.SHT_STRTAB, 0, 0, str_off, len(strtab), 0, 0, 1, 0),
        (sname(".rela.text"), elf.SHT_RELA, 0x40, 0, rela_off, len(rela), 3, 1, 8, relasz),
        (sname(".note.x"), elf.SHT_NOTE, 2, 0, note_off, len(note), 0, 0, 4, 0),
        (sname(".shstrtab"), elf.SHT_STRTAB, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0),
    ]
    if elfclass == 64:
        phdrs = [struct.pack(phfmt, elf.PT_LOAD, 5, text_off, 0x1000, 0x1000, len(text), 0x60, 16),
                 struct.pack(phfmt, elf.PT_NOTE, 4, note_off, 0, 0, len(note), len(note), 4)]
    else:
        phdrs = [struct.pack(phfmt, elf.PT_LOAD, text_off, 0x1000, 0x1000, len(text), 0x60, 5, 16),
                 struct.pack(phfmt, elf.PT_NOTE, note_off, 0, 0, len(note), len(note), 4, 4)]
    ident = b"\x7fELF" + bytes([1 if elfclass == 32 else 2, 1 if little else 2, 1]) + b"\0" * 9
    header = struct.pack(ehfmt, ident, elf.ET_EXEC, machine, 1, 0x1004, phoff, shoff, 0, ehsize,
                         phentsize, len(phdrs), shentsize, len(shdrs), 7)
    out = bytearray(shoff + shentsize * len(shdrs))
    out[0:len(header)] = header
    for i, ph in enumerate(phdrs):
        out[phoff + i * phentsize:phoff + (i + 1) * phentsize] = ph
    for where, blob in blobs:
        out[where:where + len(blob)] = blob
    for i, sh in enumerate(shdrs):
        out[shoff + i * shentsize:shoff + (i + 1) * shentsize] = struct.pack(shfmt, *sh)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# real objects

def _gcc(tmp_path_factory, name, *flags):
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("elf")
    src = d / "t.c"
    src.write_text(C_SOURCE)
    obj = d / name
    try:
        subprocess.run(["gcc", "-c", "-O1", "-g0", "-o", str(obj), str(src)] + list(flags),
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as err:
        pytest.skip("gcc %s failed: %s" % (" ".join(flags), err.stderr.decode()[-200:]))
    return obj.read_bytes()


@pytest.fixture(scope="module")
def obj64(tmp_path_factory):
    return _gcc(tmp_path_factory, "t64.o")


@pytest.fixture(scope="module")
def obj32(tmp_path_factory):
    return _gcc(tmp_path_factory, "t32.o", "-m32")


@pytest.fixture(scope="module", params=["elf64-big", "elf32-big"])
def obj_big(request, tmp_path_factory, obj64):
    """A big-endian object written by BFD itself (objcopy cannot flip a code object's byte order,
    but it can wrap raw bytes into a big-endian data object with symbols)."""
    if not shutil.which("objcopy"):
        pytest.skip("objcopy missing")
    d = tmp_path_factory.mktemp("big")
    (d / "payload.bin").write_bytes(obj64[:1000])
    res = subprocess.run(["objcopy", "-I", "binary", "-O", request.param, "payload.bin", "out.o"],
                         cwd=str(d), capture_output=True, check=False)
    if res.returncode:
        pytest.skip("objcopy -O %s failed: %s" % (request.param, res.stderr.decode()[-200:]))
    return (d / "out.o").read_bytes()


def purgatory_object():
    try:
        from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import purgatory_blob as purgatory_x86_64
    except ImportError:
        pytest.skip("generated purgatory module not built yet")
    return purgatory_x86_64.object_bytes()


def compare_with_pyelftools(blob):
    """Assert that every field our reader exposes equals what pyelftools reads."""
    ours = elf.ElfFile(blob)
    ref = ELFFile(io.BytesIO(blob))
    assert ours.elfclass == ref.elfclass
    assert ours.little_endian == ref.little_endian
    hdr = ref.header
    assert ours.e_type in (elf.ET_REL, elf.ET_EXEC, elf.ET_DYN, elf.ET_CORE)
    assert ours.e_entry == hdr["e_entry"]
    assert ours.e_phoff == hdr["e_phoff"]
    assert ours.e_shoff == hdr["e_shoff"]
    assert ours.e_flags == hdr["e_flags"]

    ref_sections = list(ref.iter_sections())
    assert len(ours.sections) == len(ref_sections)
    for mine, theirs in zip(ours.sections, ref_sections):
        assert mine.name == theirs.name
        for field in ("sh_flags", "sh_addr", "sh_offset", "sh_size", "sh_link", "sh_info",
                      "sh_addralign", "sh_entsize"):
            assert getattr(mine, field) == theirs[field], (mine, field)
        if theirs["sh_type"] != "SHT_NOBITS":
            assert bytes(mine.data()) == theirs.data()
        else:
            assert len(mine.data()) == 0

    ref_segments = list(ref.iter_segments())
    assert len(ours.segments) == len(ref_segments)
    for mine, theirs in zip(ours.segments, ref_segments):
        for field in ("p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_flags", "p_align"):
            assert getattr(mine, field) == theirs[field], (mine, field)
        assert bytes(mine.data()) == theirs.data()

    for theirs in ref_sections:
        if isinstance(theirs, SymbolTableSection):
            mine = ours.symbols(theirs.name)
            ref_syms = list(theirs.iter_symbols())
            assert len(mine) == len(ref_syms)
            for a, b in zip(mine, ref_syms):
                assert a.name == b.name
                assert a.value == b["st_value"]
                assert a.size == b["st_size"]
                shndx = b["st_shndx"]
                if isinstance(shndx, int):
                    assert a.shndx == shndx
                else:
                    assert a.shndx == {"SHN_UNDEF": 0, "SHN_ABS": 0xFFF1, "SHN_COMMON": 0xFFF2}[shndx]
        if isinstance(theirs, RelocationSection):
            mine = ours.relocations(theirs.name)
            ref_rels = list(theirs.iter_relocations())
            assert len(mine) == len(ref_rels)
            for a, b in zip(mine, ref_rels):
                assert a.offset == b["r_offset"]
                assert a.type == b["r_info_type"]
                assert a.sym == b["r_info_sym"]
                assert a.addend == (b["r_addend"] if theirs.is_RELA() else None)
        if isinstance(theirs, NoteSection):
            mine = list(elf.iter_notes(ours.sections[ref.get_section_index(theirs.name)].data(),
                                       ours.little_endian))
            ref_notes = list(theirs.iter_notes())
            ref_pairs = [(r["n_name"], r["n_type"] if isinstance(r["n_type"], int) else _note_type_number(r))
                         for r in ref_notes]
            assert [(name, ntype) for name, ntype, _desc in mine] == ref_pairs
            for (_name, _ntype, desc), r in zip(mine, ref_notes):
                assert len(desc) == r["n_descsz"]
    return ours


def _note_type_number(note):
    # pyelftools turns known note types into names; our reader keeps numbers.  Compare sizes only.
    from elftools.elf import enums
    for table in (enums.ENUM_NOTE_N_TYPE, enums.ENUM_CORE_NOTE_N_TYPE):
        if note["n_type"] in table:
            return table[note["n_type"]]
    raise AssertionError("unknown note type %r" % (note["n_type"],))


# ---------------------------------------------------------------------------------------------
# cross-checks

def test_x86_64_object_matches_pyelftools(obj64):
    ours = compare_with_pyelftools(obj64)
    assert ours.e_type == elf.ET_REL and ours.e_machine == elf.EM_X86_64
    names = {s.name for s in ours.symbols()}
    assert {"bump", "table", "table_ptr", "message", "ext_value", "ext_call"} <= names
    assert ours.relocation_sections()


def test_i386_object_matches_pyelftools(obj32):
    ours = compare_with_pyelftools(obj32)
    assert ours.elfclass == 32 and ours.e_machine == elf.EM_386
    assert ours.relocation_sections()[0].sh_type == elf.SHT_REL
    assert all(r.addend is None for r in ours.relocations(ours.relocation_sections()[0]))


def test_big_endian_objcopy_matches_pyelftools(obj_big, obj64):
    ours = compare_with_pyelftools(obj_big)
    assert not ours.little_endian
    syms = {s.name: s for s in ours.symbols()}
    assert syms["_binary_payload_bin_end"].value == 1000
    assert syms["_binary_payload_bin_size"].shndx == elf.SHN_ABS
    assert bytes(ours.section_by_name(".data").data()) == obj64[:1000]


@pytest.mark.parametrize("path", ["/bin/ls", "/bin/true", "/usr/bin/python3"])
def test_system_binaries_match_pyelftools(path):
    if not os.path.exists(path):
        pytest.skip("%s missing" % path)
    with open(os.path.realpath(path), "rb") as f:
        blob = f.read()
    ours = compare_with_pyelftools(blob)
    assert any(ph.p_type == elf.PT_LOAD for ph in ours.segments)
    assert list(ours.notes())  # GNU build-id / ABI tag at least


@pytest.mark.parametrize("elfclass", [32, 64])
@pytest.mark.parametrize("little", [True, False])
def test_synthetic_matches_pyelftools(elfclass, little):
    ours = compare_with_pyelftools(build_synthetic(elfclass, little))
    assert ours.elfclass == elfclass and ours.little_endian == little
    assert ours.e_entry == 0x1004
    syms = ours.symbols()
    assert [s.name for s in syms] == ["", "", "counter", "start", "ext"]
    start = syms[3]
    expected = (4, 16, elf.STB_GLOBAL, elf.STT_FUNC, 1)
    assert (start.value, start.size, start.bind, start.type, start.shndx) == expected
    assert ours.relocations(".rela.text") == [elf.Rela(8, 1, 4, -4), elf.Rela(16, 2, 2, 100)]
    assert list(ours.notes()) == [("Linux", 0x42, b"\x01\x02\x03\x04\x05")]
    bss = ours.section_by_name(".bss")
    assert bss.sh_size == 64 and bytes(bss.data()) == b""
    load = ours.segments[0]
    assert load.p_type == elf.PT_LOAD and bytes(load.data()) == bytes(range(32))


def test_buffer_types_share_memory(tmp_path, obj64):
    path = tmp_path / "o"
    path.write_bytes(obj64)
    with open(str(path), "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        ours = elf.ElfFile(mm)
        text = ours.section_by_name(".text")
        data = text.data()
        assert isinstance(data, memoryview) and data.obj is mm  # a view of the mapping, no copy
        assert bytes(data) == obj64[text.sh_offset:text.sh_offset + text.sh_size]
        del data, text, ours
    for buf in (bytearray(obj64), memoryview(obj64)):
        assert len(elf.ElfFile(buf).sections) == len(elf.ElfFile(obj64).sections)


def test_purgatory_object_matches_pyelftools():
    ours = compare_with_pyelftools(purgatory_object())
    assert ours.e_type == elf.ET_REL and ours.e_machine == elf.EM_X86_64


# ---------------------------------------------------------------------------------------------
# broken input

def walk(blob):
    """Read everything the reader offers; any failure must be ImageFormatError."""
    f = elf.ElfFile(blob)
    for ph in f.segments:
        bytes(ph.data())
    for sec in f.sections:
        bytes(sec.data())
        if sec.sh_type in (elf.SHT_SYMTAB, elf.SHT_DYNSYM):
            f.symbols(sec)
        if sec.sh_type in (elf.SHT_RELA, elf.SHT_REL):
            f.relocations(sec)
    f.symbols()
    list(f.notes())
    return f


@pytest.mark.parametrize("blob,message", [
    (b"", "not an ELF file"),
    (b"MZ\x90\x00" + b"\0" * 100, "not an ELF file"),
    (b"\x7fELF\x03\x01" + b"\0" * 100, "unknown class"),
    (b"\x7fELF\x02\x03" + b"\0" * 100, "unknown byte order"),
    (b"\x7fELF\x02\x01\x01" + b"\0" * 20, "header truncated"),
])
def test_bad_headers(blob, message):
    with pytest.raises(ImageFormatError, match=message):
        elf.ElfFile(blob)


def test_not_a_buffer():
    with pytest.raises(ImageFormatError, match="needs bytes"):
        elf.ElfFile(12)


def test_every_truncation_of_a_real_object_is_an_image_format_error(obj64):
    for cut in list(range(0, 200)) + list(range(200, len(obj64), 37)):
        with pytest.raises(ImageFormatError):
            walk(obj64[:cut])


def _patch(blob, offset, fmt, value):
    out = bytearray(blob)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize("offset,fmt,value,message", [
    (0x28, "<Q", 1 << 40, "section header table"),        # e_shoff past the end
    (0x20, "<Q", 1 << 40, "program header table"),        # e_phoff past the end
    (0x36, "<H", 8, "entry size 8"),                      # e_phentsize too small
    (0x3A, "<H", 16, "entry size 16"),                    # e_shentsize too small
    (0x3C, "<H", 0xFEFF, "section header table"),         # absurd e_shnum
    (0x38, "<H", 0xFFFE, "program header table"),         # absurd e_phnum
    (0x3E, "<H", 0x7000, "name table index"),             # e_shstrndx out of range
])
def test_corrupted_header_fields(offset, fmt, value, message):
    blob = build_synthetic(64, True)
    with pytest.raises(ImageFormatError, match=message):
        walk(_patch(blob, offset, fmt, value))


def _shdr_offset(blob, index, field):
    f = elf.ElfFile(blob)
    # 64-bit little-endian Elf64_Shdr field offsets
    fields = {"sh_name": 0, "sh_type": 4, "sh_offset": 24, "sh_size": 32, "sh_link": 40,
              "sh_entsize": 56}
    return f.e_shoff + index * 64 + fields[field]


@pytest.mark.parametrize("index,field,fmt,value,message", [
    (1, "sh_offset", "<Q", 1 << 50, "section 1 data"),
    (1, "sh_size", "<Q", 1 << 20, "section 1 data"),
    (1, "sh_name", "<I", 10000, "outside its"),
    (3, "sh_entsize", "<Q", 5, "entry size 5"),
    (3, "sh_size", "<Q", 0x79, "not a multiple"),
    (3, "sh_link", "<I", 99, "links to section 99"),
    (3, "sh_link", "<I", 1, "string table but has type 1"),
    (5, "sh_entsize", "<Q", 7, "entry size 7"),
    (4, "sh_size", "<Q", 3, "outside its|not NUL-terminated"),  # strtab cut: names run off
])
def test_corrupted_section_headers(index, field, fmt, value, message):
    blob = build_synthetic(64, True)
    with pytest.raises(ImageFormatError, match=message):
        walk(_patch(blob, _shdr_offset(blob, index, field), fmt, value))


def test_pt_load_filesz_larger_than_memsz():
    blob = build_synthetic(64, True)
    f = elf.ElfFile(blob)
    with pytest.raises(ImageFormatError, match="p_filesz"):
        elf.ElfFile(_patch(blob, f.e_phoff + 32, "<Q", 0x1000))


def test_notes_running_off_the_end():
    note = struct.pack("<III", 6, 100, 1) + b"Linux\0\0\0" + b"x" * 10
    with pytest.raises(ImageFormatError, match="note descriptor"):
        list(elf.iter_notes(note, True))
    with pytest.raises(ImageFormatError, match="note name"):
        list(elf.iter_notes(struct.pack(">III", 1 << 31, 0, 1), False))
    with pytest.raises(ImageFormatError, match="stray"):
        list(elf.iter_notes(b"\x01\x02", True))
    assert list(elf.iter_notes(b"\0" * 30, True)) == []


def test_notes_big_endian_and_eight_byte_alignment():
    note = struct.pack(">III", 4, 4, 5) + b"GNU\0" + b"\xaa\xbb\xcc\xdd"
    assert list(elf.iter_notes(note * 2, False)) == [("GNU", 5, b"\xaa\xbb\xcc\xdd")] * 2
    note8 = struct.pack("<III", 4, 4, 5) + b"GNU\0" + b"\x11" * 4 + b"\0" * 4
    assert list(elf.iter_notes(note8 * 2, True, align=8)) == [("GNU", 5, b"\x11" * 4)] * 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_objects_only_raise_image_format_error(data):
    elfclass = data.draw(st.sampled_from([32, 64]))
    little = data.draw(st.booleans())
    blob = bytearray(build_synthetic(elfclass, little))
    for dummy in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[:data.draw(st.integers(0, len(blob)))]
    try:
        walk(bytes(blob))
    except ImageFormatError:
        pass
