# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small ELF reader (stdlib only): 32/64-bit, little and big endian.

The loader needs ELF in three places: the PT_LOAD segments of an ELF kernel (vmlinux),
the sections, symbols and RELA relocations of the purgatory object it links itself, and ELF
notes (crash notes, vmcoreinfo).  pyelftools would do, but host-side code is stdlib only, so this
module reads exactly what those uses need and nothing more.

Two promises:

* No big copies.  ``ElfFile`` keeps a ``memoryview`` of the buffer it is given (bytes, bytearray,
  mmap or memoryview) and ``.data()`` returns slices of that view; a 60 MB vmlinux mapped with
  mmap is never read into Python bytes.  Only string tables are copied (once, lazily).
* Every malformed input raises ``ImageFormatError`` with a message that says what is wrong and
  where: bad magic, unknown class or byte order, truncated headers, tables or data outside the
  file, absurd entry sizes or counts, names outside their string table.  Callers never see
  ``IndexError`` or ``struct.error``.

All headers are validated when ``ElfFile`` is constructed, so an object that constructs is safe to
walk.  Symbols, relocations and notes are validated when they are read.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ..errors import ImageFormatError

ELFMAG = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2

ET_NONE = 0
ET_REL = 1
ET_EXEC = 2
ET_DYN = 3
ET_CORE = 4

EM_386 = 3
EM_PPC = 20
EM_PPC64 = 21
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243

PT_NULL = 0
PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
PT_NOTE = 4
PT_PHDR = 6

PF_X = 1
PF_W = 2
PF_R = 4

SHT_NULL = 0
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_RELA = 4
SHT_HASH = 5
SHT_DYNAMIC = 6
SHT_NOTE = 7
SHT_NOBITS = 8
SHT_REL = 9
SHT_DYNSYM = 11
SHT_GROUP = 17
SHT_SYMTAB_SHNDX = 18

SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4

SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2
SHN_XINDEX = 0xFFFF

PN_XNUM = 0xFFFF

STB_LOCAL = 0
STB_GLOBAL = 1
STB_WEAK = 2

STT_NOTYPE = 0
STT_OBJECT = 1
STT_FUNC = 2
STT_SECTION = 3
STT_FILE = 4

# Field layouts, without the byte-order prefix (added per file).  The names only document them.
_EHDR = {32: "16sHHIIIIIHHHHHH", 64: "16sHHIQQQIHHHHHH"}
_PHDR = {32: "IIIIIIII", 64: "IIQQQQQQ"}  # 32-bit order differs: p_flags comes after p_memsz
_SHDR = {32: "IIIIIIIIII", 64: "IIQQQQIIQQ"}
_SYM = {32: "IIIBBH", 64: "IBBHQQ"}  # 32: name value size info other shndx; 64: name info other shndx value size
_RELA = {32: "IIi", 64: "QQq"}
_REL = {32: "II", 64: "QQ"}

# Bounds on things that are otherwise only bounded by the file size; a real kernel or purgatory
# object is orders of magnitude below them, a fuzzed header usually far above.
_MAX_HEADERS = 1 << 20


def _as_view(buf):
    """Return a flat byte memoryview of *buf* without copying it."""
    try:
        view = memoryview(buf)
    except TypeError:
        raise ImageFormatError(
            "ELF reader needs bytes, bytearray, mmap or memoryview, not %s" % type(buf).__name__)
    if view.ndim != 1 or view.itemsize != 1 or not view.c_contiguous:
        try:
            view = view.cast("B")
        except TypeError:
            raise ImageFormatError("ELF reader needs a contiguous byte buffer")
    elif view.format != "B":
        view = view.cast("B")
    return view


def _check_range(total, offset, size, what):
    """Raise ImageFormatError unless [offset, offset+size) lies inside a buffer of *total* bytes."""
    if offset < 0 or size < 0 or offset > total or size > total - offset:
        raise ImageFormatError(
            "ELF %s at offset %#x, size %#x lies outside the %#x-byte file (truncated or corrupted)"
            % (what, offset, size, total))


def _cstring(table, offset, what):
    """Read the NUL-terminated name at *offset* of string table bytes *table*."""
    if offset == 0 and not table:
        return ""
    if offset >= len(table):
        raise ImageFormatError(
            "ELF %s name offset %#x lies outside its %#x-byte string table" % (what, offset, len(table)))
    end = table.find(b"\0", offset)
    if end < 0:
        raise ImageFormatError("ELF %s name at offset %#x is not NUL-terminated" % (what, offset))
    return table[offset:end].decode("utf-8", "replace")


class ProgramHeader:
    """One program header (segment) of an ELF file; ``data()`` is its file image, not copied."""

    __slots__ = ("index", "p_type", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz",
                 "p_flags", "p_align", "_view")

    def __init__(self, index, p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags,
                 p_align, view):
        self.index = index
        self.p_type = p_type
        self.p_offset = p_offset
        self.p_vaddr = p_vaddr
        self.p_paddr = p_paddr
        self.p_filesz = p_filesz
        self.p_memsz = p_memsz
        self.p_flags = p_flags
        self.p_align = p_align
        self._view = view

    def data(self):
        """The p_filesz bytes at p_offset, as a memoryview into the original buffer."""
        return self._view[self.p_offset:self.p_offset + self.p_filesz]

    def __repr__(self):
        return ("ProgramHeader(index=%d, p_type=%#x, p_offset=%#x, p_vaddr=%#x, p_paddr=%#x, "
                "p_filesz=%#x, p_memsz=%#x, p_flags=%#x, p_align=%#x)"
                % (self.index, self.p_type, self.p_offset, self.p_vaddr, self.p_paddr,
                   self.p_filesz, self.p_memsz, self.p_flags, self.p_align))


class Section:
    """One section header of an ELF file; ``data()`` is its contents (empty for SHT_NOBITS)."""

    __slots__ = ("index", "name", "sh_name", "sh_type", "sh_flags", "sh_addr", "sh_offset",
                 "sh_size", "sh_link", "sh_info", "sh_addralign", "sh_entsize", "_view")

    def __init__(self, index, sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link,
                 sh_info, sh_addralign, sh_entsize, view):
        self.index = index
        self.name = ""
        self.sh_name = sh_name
        self.sh_type = sh_type
        self.sh_flags = sh_flags
        self.sh_addr = sh_addr
        self.sh_offset = sh_offset
        self.sh_size = sh_size
        self.sh_link = sh_link
        self.sh_info = sh_info
        self.sh_addralign = sh_addralign
        self.sh_entsize = sh_entsize
        self._view = view

    def data(self):
        """The section's bytes as a memoryview into the original buffer (empty for .bss-like)."""
        if self.sh_type == SHT_NOBITS:
            return self._view[0:0]
        return self._view[self.sh_offset:self.sh_offset + self.sh_size]

    def __repr__(self):
        return ("Section(index=%d, name=%r, sh_type=%#x, sh_flags=%#x, sh_addr=%#x, "
                "sh_offset=%#x, sh_size=%#x, sh_link=%d, sh_info=%d, sh_addralign=%#x, "
                "sh_entsize=%#x)"
                % (self.index, self.name, self.sh_type, self.sh_flags, self.sh_addr,
                   self.sh_offset, self.sh_size, self.sh_link, self.sh_info, self.sh_addralign,
                   self.sh_entsize))


class Symbol:
    """One symbol table entry.  ``shndx`` is the raw section index (SHN_* values included)."""

    __slots__ = ("index", "name", "value", "size", "bind", "type", "other", "shndx")

    def __init__(self, index, name, value, size, bind, type_, other, shndx):
        self.index = index
        self.name = name
        self.value = value
        self.size = size
        self.bind = bind
        self.type = type_
        self.other = other
        self.shndx = shndx

    def __repr__(self):
        return ("Symbol(index=%d, name=%r, value=%#x, size=%d, bind=%d, type=%d, shndx=%d)"
                % (self.index, self.name, self.value, self.size, self.bind, self.type, self.shndx))


class Rela:
    """One relocation.  ``addend`` is None for SHT_REL entries (the addend sits in the target)."""

    __slots__ = ("offset", "type", "sym", "addend")

    def __init__(self, offset, type_, sym, addend):
        self.offset = offset
        self.type = type_
        self.sym = sym
        self.addend = addend

    def __eq__(self, other):
        return (isinstance(other, Rela) and (self.offset, self.type, self.sym, self.addend)
                == (other.offset, other.type, other.sym, other.addend))

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "Rela(offset=%#x, type=%d, sym=%d, addend=%r)" % (
            self.offset, self.type, self.sym, self.addend)


class ElfFile:
    """An ELF file read from a buffer (bytes, bytearray, mmap or memoryview), never copied.

    Attributes: ``elfclass`` (32 or 64), ``little_endian``, ``e_type``, ``e_machine``,
    ``e_version``, ``e_entry``, ``e_flags``, ``e_phoff``, ``e_shoff``, ``e_shstrndx``,
    ``osabi``, ``segments`` (list of ProgramHeader), ``sections`` (list of Section, index 0 is
    the null section when the file has a section table).
    """

    def __init__(self, buf):
        view = _as_view(buf)
        self._view = view
        total = len(view)
        if total < 16 or bytes(view[0:4]) != ELFMAG:
            raise ImageFormatError("not an ELF file: the first four bytes are not \\x7fELF")
        ei_class = view[4]
        ei_data = view[5]
        if ei_class == ELFCLASS32:
            self.elfclass = 32
        elif ei_class == ELFCLASS64:
            self.elfclass = 64
        else:
            raise ImageFormatError("ELF file has an unknown class %d (expected 1=32-bit or 2=64-bit)"
                                   % ei_class)
        if ei_data == ELFDATA2LSB:
            self.little_endian = True
        elif ei_data == ELFDATA2MSB:
            self.little_endian = False
        else:
            raise ImageFormatError("ELF file has an unknown byte order %d (expected 1=LSB or 2=MSB)"
                                   % ei_data)
        self.osabi = view[7]
        self._bo = "<" if self.little_endian else ">"
        ehdr = struct.Struct(self._bo + _EHDR[self.elfclass])
        if total < ehdr.size:
            raise ImageFormatError("ELF header truncated: the file has %d bytes, a %d-bit header needs %d"
                                   % (total, self.elfclass, ehdr.size))
        (_ident, self.e_type, self.e_machine, self.e_version, self.e_entry, self.e_phoff,
         self.e_shoff, self.e_flags, self.e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum,
         e_shstrndx) = ehdr.unpack_from(view, 0)
        self._sym_struct = struct.Struct(self._bo + _SYM[self.elfclass])
        self._strtabs = {}
        self.sections = self._read_sections(e_shentsize, e_shnum, e_shstrndx)
        self.segments = self._read_segments(e_phentsize, e_phnum)

    # -- construction helpers -------------------------------------------------------------

    def _table(self, offset, entsize, count, layout, what):
        """Unpack *count* fixed-size records of *layout* starting at *offset*."""
        rec = struct.Struct(self._bo + layout)
        if count > _MAX_HEADERS:
            raise ImageFormatError("ELF %s count %d is absurd (corrupted header)" % (what, count))
        if entsize < rec.size:
            raise ImageFormatError("ELF %s entry size %d is smaller than the %d bytes a %d-bit entry needs"
                                   % (what, entsize, rec.size, self.elfclass))
        _check_range(len(self._view), offset, entsize * count, what + " table")
        return [rec.unpack_from(self._view, offset + i * entsize) for i in range(count)]

    def _read_sections(self, shentsize, shnum, shstrndx):
        if self.e_shoff == 0:
            self.e_shstrndx = 0
            return []
        first = self._table(self.e_shoff, shentsize, 1, _SHDR[self.elfclass], "section header")[0]
        # Extended numbering: with 0xff00 or more sections the real count and string table index
        # move into the null section's sh_size and sh_link.
        if shnum == 0:
            shnum = first[5]
        if shstrndx == SHN_XINDEX:
            shstrndx = first[6]
        if shnum == 0:
            raise ImageFormatError("ELF section table at %#x has no entries, not even the null section"
                                   % self.e_shoff)
        rows = self._table(self.e_shoff, shentsize, shnum, _SHDR[self.elfclass], "section header")
        total = len(self._view)
        sections = []
        for index, row in enumerate(rows):
            sec = Section(index, *(row + (self._view,)))
            if sec.sh_type != SHT_NOBITS and sec.sh_type != SHT_NULL:
                _check_range(total, sec.sh_offset, sec.sh_size, "section %d data" % index)
            if sec.sh_link >= shnum and sec.sh_type in (SHT_SYMTAB, SHT_DYNSYM, SHT_RELA, SHT_REL):
                raise ImageFormatError("ELF section %d links to section %d, but there are only %d"
                                       % (index, sec.sh_link, shnum))
            sections.append(sec)
        self.e_shstrndx = shstrndx
        if shstrndx != SHN_UNDEF:
            if shstrndx >= shnum:
                raise ImageFormatError("ELF section name table index %d is beyond the %d sections"
                                       % (shstrndx, shnum))
            names = self._strtab(sections[shstrndx])
            for sec in sections:
                sec.name = _cstring(names, sec.sh_name, "section %d" % sec.index)
        return sections

    def _read_segments(self, phentsize, phnum):
        if self.e_phoff == 0 or phnum == 0:
            return []
        if phnum == PN_XNUM and self.sections:
            phnum = self.sections[0].sh_info
        rows = self._table(self.e_phoff, phentsize, phnum, _PHDR[self.elfclass], "program header")
        total = len(self._view)
        segments = []
        for index, row in enumerate(rows):
            if self.elfclass == 64:
                p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align = row
            else:
                p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align = row
            if p_type == PT_LOAD and p_filesz > p_memsz:
                raise ImageFormatError("ELF PT_LOAD segment %d has p_filesz %#x larger than p_memsz %#x"
                                       % (index, p_filesz, p_memsz))
            if p_type != PT_NULL:
                _check_range(total, p_offset, p_filesz, "segment %d data" % index)
            segments.append(ProgramHeader(index, p_type, p_offset, p_vaddr, p_paddr, p_filesz,
                                          p_memsz, p_flags, p_align, self._view))
        return segments

    def _strtab(self, sec):
        """The bytes of string table *sec*, copied once (string tables are small)."""
        cached = self._strtabs.get(sec.index)
        if cached is None:
            if sec.sh_type != SHT_STRTAB:
                raise ImageFormatError("ELF section %d (%s) is used as a string table but has type %d"
                                       % (sec.index, sec.name or "?", sec.sh_type))
            cached = bytes(sec.data())
            self._strtabs[sec.index] = cached
        return cached

    # -- public API -----------------------------------------------------------------------

    def section_by_name(self, name):
        """The first section called *name*, or None."""
        for sec in self.sections:
            if sec.name == name:
                return sec
        return None

    def _section(self, section, what):
        if isinstance(section, Section):
            return section
        if isinstance(section, int):
            if not 0 <= section < len(self.sections):
                raise ImageFormatError("ELF %s section index %d is beyond the %d sections"
                                       % (what, section, len(self.sections)))
            return self.sections[section]
        sec = self.section_by_name(section)
        if sec is None:
            raise ImageFormatError("ELF file has no %s section %r" % (what, section))
        return sec

    def symbols(self, section=None):
        """The symbols of *section* (default: the SHT_SYMTAB, else the SHT_DYNSYM), index 0 included.

        Returns a list whose positions are the symbol indices relocations refer to; an empty list
        when the file has no symbol table.
        """
        if section is None:
            for wanted in (SHT_SYMTAB, SHT_DYNSYM):
                for sec in self.sections:
                    if sec.sh_type == wanted:
                        section = sec
                        break
                if section is not None:
                    break
            if section is None:
                return []
        sec = self._section(section, "symbol table")
        if sec.sh_type not in (SHT_SYMTAB, SHT_DYNSYM):
            raise ImageFormatError("ELF section %d (%s) is not a symbol table (type %d)"
                                   % (sec.index, sec.name, sec.sh_type))
        rec = self._sym_struct
        entsize = sec.sh_entsize or rec.size
        if entsize < rec.size:
            raise ImageFormatError("ELF symbol table %s has entry size %d, a %d-bit symbol needs %d"
                                   % (sec.name, entsize, self.elfclass, rec.size))
        if sec.sh_size % entsize:
            raise ImageFormatError("ELF symbol table %s size %#x is not a multiple of its entry size %d"
                                   % (sec.name, sec.sh_size, entsize))
        names = self._strtab(self.sections[sec.sh_link])
        data = sec.data()
        symbols = []
        for index in range(sec.sh_size // entsize):
            row = rec.unpack_from(data, index * entsize)
            if self.elfclass == 64:
                st_name, st_info, st_other, st_shndx, st_value, st_size = row
            else:
                st_name, st_value, st_size, st_info, st_other, st_shndx = row
            name = _cstring(names, st_name, "symbol %d" % index)
            symbols.append(Symbol(index, name, st_value, st_size, st_info >> 4, st_info & 0xF,
                                  st_other, st_shndx))
        return symbols

    def relocation_sections(self):
        """Every SHT_RELA and SHT_REL section, in file order."""
        return [sec for sec in self.sections if sec.sh_type in (SHT_RELA, SHT_REL)]

    def relocations(self, section):
        """The entries of relocation section *section* (a Section, index or name).

        The section's ``sh_info`` names the section the relocations patch and ``sh_link`` the
        symbol table ``Rela.sym`` indexes.
        """
        sec = self._section(section, "relocation")
        if sec.sh_type == SHT_RELA:
            rec = struct.Struct(self._bo + _RELA[self.elfclass])
        elif sec.sh_type == SHT_REL:
            rec = struct.Struct(self._bo + _REL[self.elfclass])
        else:
            raise ImageFormatError("ELF section %d (%s) is not a relocation section (type %d)"
                                   % (sec.index, sec.name, sec.sh_type))
        entsize = sec.sh_entsize or rec.size
        if entsize < rec.size:
            raise ImageFormatError("ELF relocation section %s has entry size %d, needs %d"
                                   % (sec.name, entsize, rec.size))
        if sec.sh_size % entsize:
            raise ImageFormatError("ELF relocation section %s size %#x is not a multiple of %d"
                                   % (sec.name, sec.sh_size, entsize))
        data = sec.data()
        shift, mask = (32, 0xFFFFFFFF) if self.elfclass == 64 else (8, 0xFF)
        out = []
        for index in range(sec.sh_size // entsize):
            row = rec.unpack_from(data, index * entsize)
            addend = row[2] if len(row) == 3 else None
            out.append(Rela(row[0], row[1] & mask, row[1] >> shift, addend))
        return out

    def notes(self):
        """Every (name, type, desc) note of the PT_NOTE segments, or of SHT_NOTE sections if none."""
        sources = [(ph.data(), ph.p_align) for ph in self.segments if ph.p_type == PT_NOTE]
        if not sources:
            sources = [(sec.data(), sec.sh_addralign) for sec in self.sections
                       if sec.sh_type == SHT_NOTE]
        for data, align in sources:
            yield from iter_notes(data, self.little_endian, 8 if align == 8 else 4)


def iter_notes(buf, little_endian, align=4):
    """Yield (name, type, desc) for each ELF note in *buf*.

    ``name`` is a str without its NUL, ``desc`` bytes.  Notes are padded to 4 bytes (8 for the
    rare PT_NOTE segments with p_align 8, such as GNU properties).  A note running past the end
    of *buf* raises ImageFormatError; trailing zero padding shorter than a note header is ignored.
    """
    view = _as_view(buf)
    hdr = struct.Struct(("<" if little_endian else ">") + "III")
    total = len(view)
    offset = 0
    pad = align - 1
    while offset + hdr.size <= total:
        namesz, descsz, ntype = hdr.unpack_from(view, offset)
        if namesz == 0 and descsz == 0 and ntype == 0:
            # The kernel's crash notes end with an all-zero note; stop there.
            return
        name_off = offset + hdr.size
        desc_off = (name_off + namesz + pad) & ~pad
        _check_range(total, name_off, namesz, "note name")
        _check_range(total, desc_off, descsz, "note descriptor")
        name = bytes(view[name_off:name_off + namesz]).rstrip(b"\0").decode("utf-8", "replace")
        desc = bytes(view[desc_off:desc_off + descsz])
        yield name, ntype, desc
        offset = (desc_off + descsz + pad) & ~pad
    if offset < total and any(bytes(view[offset:total])):
        raise ImageFormatError("ELF note area ends with %d stray bytes at offset %#x"
                               % (total - offset, offset))
