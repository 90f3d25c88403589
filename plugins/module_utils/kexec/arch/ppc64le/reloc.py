# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PPC64 relocation types the purgatory object uses (64-bit ELF V2 ABI, chapter 3.5.3).

gcc emits them for ``-mcmodel=medium`` code: data is reached TOC-relatively (R_PPC64_TOC16_HA
with _LO or _LO_DS), a function's global entry point computes its TOC pointer from its own
address (R_PPC64_REL16_HA/LO against ``.TOC.``), calls are relative branches (R_PPC64_REL24)
to the callee's *local* entry point, which skips that computation because caller and callee
share one TOC.  ``.TOC.`` is the linker's to define: here the image base plus 0x8000, so the
TOC-relative offsets of a purgatory of up to 64 KiB fit a signed 16-bit field.

Every field is little-endian; a 16-bit field of an instruction is its low halfword, and the
relocation's offset points at it.  Each result is checked against its field; nothing is ever
truncated silently.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...core.elf import EM_PPC64, SHN_UNDEF
from ...errors import PurgatoryError
from ...purgatory.linker import Relocator

R_PPC64_NONE = 0
R_PPC64_ADDR32 = 1
R_PPC64_REL24 = 10
R_PPC64_REL14 = 11
R_PPC64_REL32 = 26
R_PPC64_ADDR64 = 38
R_PPC64_REL64 = 44
R_PPC64_TOC16 = 47
R_PPC64_TOC16_LO = 48
R_PPC64_TOC16_HI = 49
R_PPC64_TOC16_HA = 50
R_PPC64_TOC = 51
R_PPC64_TOC16_DS = 63
R_PPC64_TOC16_LO_DS = 64
R_PPC64_ENTRY = 118
R_PPC64_REL16 = 249
R_PPC64_REL16_LO = 250
R_PPC64_REL16_HI = 251
R_PPC64_REL16_HA = 252

RELOCATION_NAMES = {
    R_PPC64_NONE: "R_PPC64_NONE",
    R_PPC64_ADDR32: "R_PPC64_ADDR32",
    R_PPC64_REL24: "R_PPC64_REL24",
    R_PPC64_REL14: "R_PPC64_REL14",
    R_PPC64_REL32: "R_PPC64_REL32",
    R_PPC64_ADDR64: "R_PPC64_ADDR64",
    R_PPC64_REL64: "R_PPC64_REL64",
    R_PPC64_TOC16: "R_PPC64_TOC16",
    R_PPC64_TOC16_LO: "R_PPC64_TOC16_LO",
    R_PPC64_TOC16_HI: "R_PPC64_TOC16_HI",
    R_PPC64_TOC16_HA: "R_PPC64_TOC16_HA",
    R_PPC64_TOC: "R_PPC64_TOC",
    R_PPC64_TOC16_DS: "R_PPC64_TOC16_DS",
    R_PPC64_TOC16_LO_DS: "R_PPC64_TOC16_LO_DS",
    R_PPC64_ENTRY: "R_PPC64_ENTRY",
    R_PPC64_REL16: "R_PPC64_REL16",
    R_PPC64_REL16_LO: "R_PPC64_REL16_LO",
    R_PPC64_REL16_HI: "R_PPC64_REL16_HI",
    R_PPC64_REL16_HA: "R_PPC64_REL16_HA",
}

#: The linker-defined TOC base symbol, and where it points: base + TOC_OFFSET (the ABI's bias).
TOC_SYMBOL = ".TOC."
TOC_OFFSET = 0x8000
#: Branch instructions whose target is a function's local entry point.
BRANCHES = frozenset([R_PPC64_REL24, R_PPC64_REL14])

_U64 = (1 << 64) - 1
_WIDTHS = {R_PPC64_ADDR64: 8, R_PPC64_REL64: 8, R_PPC64_TOC: 8,
           R_PPC64_ADDR32: 4, R_PPC64_REL32: 4, R_PPC64_REL24: 4, R_PPC64_REL14: 4}
# The 16-bit fields: (how the value is derived from S + A, the base subtracted, the check).
_HALF = {
    R_PPC64_TOC16: ("toc", "signed16"), R_PPC64_TOC16_LO: ("toc", "lo"), R_PPC64_TOC16_HI: ("toc", "hi"),
    R_PPC64_TOC16_HA: ("toc", "ha"), R_PPC64_TOC16_DS: ("toc", "signed16_ds"),
    R_PPC64_TOC16_LO_DS: ("toc", "lo_ds"),
    R_PPC64_REL16: ("pc", "signed16"), R_PPC64_REL16_LO: ("pc", "lo"), R_PPC64_REL16_HI: ("pc", "hi"),
    R_PPC64_REL16_HA: ("pc", "ha"),
}


def local_entry_offset(st_other):
    """Bytes from a function's global entry point to its local one (ELFv2 3.4.1: st_other bits
    5-7; 0 and 1 mean there is no separate local entry point)."""
    code = (st_other >> 5) & 7
    if code == 7:
        raise PurgatoryError("purgatory symbol has the reserved local-entry code 7 in st_other; rebuild it")
    return ((1 << code) >> 2) << 2


def _fits(value, bits, signed):
    if signed:
        return -(1 << (bits - 1)) <= value < (1 << (bits - 1))
    return 0 <= value < (1 << bits)


def _name(rtype):
    return RELOCATION_NAMES.get(rtype, "type %d" % rtype)


def _half(rtype, value, place):
    """The 16 bits a half16 relocation stores, from its (already biased) ``value``."""
    name = _name(rtype)
    check = _HALF[rtype][1]
    if check in ("signed16", "signed16_ds"):
        if not _fits(value, 16, signed=True):
            raise PurgatoryError("%s at %#x: %#x does not fit a signed 16-bit field" % (name, place, value))
        field = value & 0xFFFF
    elif check in ("lo", "lo_ds"):
        field = value & 0xFFFF
    elif check == "hi":
        if not _fits(value, 32, signed=True):
            raise PurgatoryError("%s at %#x: %#x does not fit the signed 32 bits a high/low pair reaches"
                                 % (name, place, value))
        field = (value >> 16) & 0xFFFF
    else:  # "ha": high half adjusted for the sign of the low half
        if not _fits(value + 0x8000, 32, signed=True):
            raise PurgatoryError("%s at %#x: %#x does not fit the signed 32 bits an @ha/@l pair reaches"
                                 % (name, place, value))
        field = ((value + 0x8000) >> 16) & 0xFFFF
    if check.endswith("_ds") and value & 3:
        raise PurgatoryError("%s at %#x: %#x is not a multiple of 4, which a DS-form field needs" % (name, place, value))
    return field


def relocate(rtype, symbol_value, addend, place, toc):
    """Compute one PPC64 relocation; return (kind, value) to store.

    ``symbol_value`` is S (for branches already the local entry point), ``addend`` A, ``place``
    P (the patched field's final address), ``toc`` the value of ``.TOC.``.  ``kind`` is
    "u64", "u32", "half16", "half16ds" (the low 2 bits of the halfword belong to the opcode),
    "branch24" or "branch14" (the displacement bits of a branch instruction).
    """
    name = _name(rtype)
    if rtype in (R_PPC64_ADDR64, R_PPC64_REL64, R_PPC64_TOC):
        value = {R_PPC64_ADDR64: symbol_value + addend, R_PPC64_REL64: symbol_value + addend - place,
                 R_PPC64_TOC: toc + addend}[rtype]
        if not -(1 << 63) <= value <= _U64:
            raise PurgatoryError("%s at %#x: %#x does not fit 64 bits" % (name, place, value))
        return "u64", value & _U64
    if rtype == R_PPC64_ADDR32:
        value = symbol_value + addend
        # A "bitfield" word: correct when read back as signed or as unsigned.
        if not -(1 << 31) <= value < (1 << 32):
            raise PurgatoryError("%s at %#x: %#x does not fit a 32-bit field; place the purgatory below 4 GiB"
                                 % (name, place, value))
        return "u32", value & 0xFFFFFFFF
    if rtype == R_PPC64_REL32:
        value = symbol_value + addend - place
        if not _fits(value, 32, signed=True):
            raise PurgatoryError("%s at %#x cannot reach %#x (displacement %#x does not fit a signed 32-bit field)"
                                 % (name, place, symbol_value + addend, value))
        return "u32", value & 0xFFFFFFFF
    if rtype in BRANCHES:
        value = symbol_value + addend - place
        bits = 26 if rtype == R_PPC64_REL24 else 16
        if value & 3 or not _fits(value, bits, signed=True):
            raise PurgatoryError("%s at %#x cannot reach %#x (displacement %#x is not a multiple of 4 within "
                                 "+-%#x)" % (name, place, symbol_value + addend, value, 1 << (bits - 1)))
        return ("branch24" if bits == 26 else "branch14"), value
    if rtype in _HALF:
        base = toc if _HALF[rtype][0] == "toc" else place
        field = _half(rtype, symbol_value + addend - base, place)
        return ("half16ds" if _HALF[rtype][1].endswith("_ds") else "half16"), field
    raise PurgatoryError("purgatory object uses relocation %s, which this linker does not support; "
                         "rebuild it with purgatory/build.py" % name)


def store(image, offset, kind, value):
    """Write a relocate() result into ``image`` at ``offset`` (little-endian fields)."""
    if kind == "u64":
        struct.pack_into("<Q", image, offset, value)
    elif kind == "u32":
        struct.pack_into("<I", image, offset, value)
    elif kind == "half16":
        struct.pack_into("<H", image, offset, value)
    elif kind == "half16ds":
        old = struct.unpack_from("<H", image, offset)[0]
        struct.pack_into("<H", image, offset, (value & 0xFFFC) | (old & 3))
    else:
        mask = 0x03FFFFFC if kind == "branch24" else 0x0000FFFC
        insn = struct.unpack_from("<I", image, offset)[0]
        struct.pack_into("<I", image, offset, (insn & ~mask & 0xFFFFFFFF) | (value & mask))


class Ppc64Relocator(Relocator):
    """Applies R_PPC64_* relocations and defines ``.TOC.``."""

    machine = EM_PPC64
    name = "ppc64le"
    # R_PPC64_ENTRY only marks a global entry point the linker may optimise; it patches nothing.
    none_types = frozenset([R_PPC64_NONE, R_PPC64_ENTRY])

    def width(self, rtype):
        if rtype in _HALF:
            return 2
        return _WIDTHS.get(rtype, 4)

    @staticmethod
    def toc(base):
        """The value of ``.TOC.`` for an image linked at ``base``."""
        return base + TOC_OFFSET

    def linker_symbol(self, name, obj, base):
        return self.toc(base) if name == TOC_SYMBOL else None

    def target(self, rtype, symbol, value):
        # A branch to a function of this object enters it past the TOC set-up of its global entry.
        if rtype in BRANCHES and symbol.shndx != SHN_UNDEF:
            return value + local_entry_offset(symbol.other)
        return value

    def apply(self, image, offset, rtype, symbol_value, addend, place, obj, base):
        kind, value = relocate(rtype, symbol_value, addend, place, self.toc(base))
        store(image, offset, kind, value)


RELOCATOR = Ppc64Relocator()
