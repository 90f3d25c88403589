# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AArch64 relocation types the purgatory object uses ("ELF for the Arm 64-bit Architecture",
AAELF64, section 5.7: static relocations).

gcc's small code model (the default; no PIC) emits ADRP + ADD/LDR/STR pairs for addresses
(ADR_PREL_PG_HI21 with ADD_ABS_LO12_NC or LDST*_ABS_LO12_NC), CALL26/JUMP26 for calls and tail
calls between objects, ABS64 for pointers in data, and the assembler may leave PREL32, ADR_PREL_LO21,
LD_PREL_LO19 or conditional branches across sections.  Each is computed from S (the symbol's
final address), A (the addend) and P (the patched place's final address), checked against its
field (overflow, and the alignment a scaled field needs), and written into the instruction's
immediate bits, little-endian; nothing is ever truncated.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...core.elf import EM_AARCH64
from ...errors import PurgatoryError
from ...purgatory.linker import Relocator

R_AARCH64_NONE = 0
R_AARCH64_ABS64 = 257
R_AARCH64_ABS32 = 258
R_AARCH64_ABS16 = 259
R_AARCH64_PREL64 = 260
R_AARCH64_PREL32 = 261
R_AARCH64_PREL16 = 262
R_AARCH64_LD_PREL_LO19 = 273
R_AARCH64_ADR_PREL_LO21 = 274
R_AARCH64_ADR_PREL_PG_HI21 = 275
R_AARCH64_ADR_PREL_PG_HI21_NC = 276
R_AARCH64_ADD_ABS_LO12_NC = 277
R_AARCH64_LDST8_ABS_LO12_NC = 278
R_AARCH64_TSTBR14 = 279
R_AARCH64_CONDBR19 = 280
R_AARCH64_JUMP26 = 282
R_AARCH64_CALL26 = 283
R_AARCH64_LDST16_ABS_LO12_NC = 284
R_AARCH64_LDST32_ABS_LO12_NC = 285
R_AARCH64_LDST64_ABS_LO12_NC = 286
R_AARCH64_LDST128_ABS_LO12_NC = 299

RELOCATION_NAMES = {
    R_AARCH64_NONE: "R_AARCH64_NONE",
    R_AARCH64_ABS64: "R_AARCH64_ABS64",
    R_AARCH64_ABS32: "R_AARCH64_ABS32",
    R_AARCH64_ABS16: "R_AARCH64_ABS16",
    R_AARCH64_PREL64: "R_AARCH64_PREL64",
    R_AARCH64_PREL32: "R_AARCH64_PREL32",
    R_AARCH64_PREL16: "R_AARCH64_PREL16",
    R_AARCH64_LD_PREL_LO19: "R_AARCH64_LD_PREL_LO19",
    R_AARCH64_ADR_PREL_LO21: "R_AARCH64_ADR_PREL_LO21",
    R_AARCH64_ADR_PREL_PG_HI21: "R_AARCH64_ADR_PREL_PG_HI21",
    R_AARCH64_ADR_PREL_PG_HI21_NC: "R_AARCH64_ADR_PREL_PG_HI21_NC",
    R_AARCH64_ADD_ABS_LO12_NC: "R_AARCH64_ADD_ABS_LO12_NC",
    R_AARCH64_LDST8_ABS_LO12_NC: "R_AARCH64_LDST8_ABS_LO12_NC",
    R_AARCH64_TSTBR14: "R_AARCH64_TSTBR14",
    R_AARCH64_CONDBR19: "R_AARCH64_CONDBR19",
    R_AARCH64_JUMP26: "R_AARCH64_JUMP26",
    R_AARCH64_CALL26: "R_AARCH64_CALL26",
    R_AARCH64_LDST16_ABS_LO12_NC: "R_AARCH64_LDST16_ABS_LO12_NC",
    R_AARCH64_LDST32_ABS_LO12_NC: "R_AARCH64_LDST32_ABS_LO12_NC",
    R_AARCH64_LDST64_ABS_LO12_NC: "R_AARCH64_LDST64_ABS_LO12_NC",
    R_AARCH64_LDST128_ABS_LO12_NC: "R_AARCH64_LDST128_ABS_LO12_NC",
}

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1

# Data relocations: (bytes, struct code, lowest allowed result, highest allowed result, PC-relative).
# AAELF64 checks ABS32/PREL32 against [-2**31, 2**32): a value that is right signed or unsigned.
_DATA = {
    R_AARCH64_ABS64: (8, "<Q", -(1 << 63), _M64, False),
    R_AARCH64_ABS32: (4, "<I", -(1 << 31), _M32, False),
    R_AARCH64_ABS16: (2, "<H", -(1 << 15), 0xFFFF, False),
    R_AARCH64_PREL64: (8, "<Q", -(1 << 63), _M64, True),
    R_AARCH64_PREL32: (4, "<I", -(1 << 31), _M32, True),
    R_AARCH64_PREL16: (2, "<H", -(1 << 15), 0xFFFF, True),
}

# Scaled low-12-bit immediates of loads and stores: the access size's log2 (the shift of X[11:0]).
_LDST_SHIFT = {
    R_AARCH64_LDST8_ABS_LO12_NC: 0,
    R_AARCH64_LDST16_ABS_LO12_NC: 1,
    R_AARCH64_LDST32_ABS_LO12_NC: 2,
    R_AARCH64_LDST64_ABS_LO12_NC: 3,
    R_AARCH64_LDST128_ABS_LO12_NC: 4,
}

# PC-relative branches and literal loads: (field width in bits, lowest bit of the field in the
# instruction); the value is X >> 2 and X must be a multiple of 4.
_BRANCH = {
    R_AARCH64_JUMP26: (26, 0),
    R_AARCH64_CALL26: (26, 0),
    R_AARCH64_CONDBR19: (19, 5),
    R_AARCH64_LD_PREL_LO19: (19, 5),
    R_AARCH64_TSTBR14: (14, 5),
}


def _page(address):
    """Page(expr) of AAELF64: the address with its low 12 bits cleared (ADRP works in 4 KiB units
    whatever page size the kernel uses)."""
    return address & ~0xFFF


def _signed_fits(value, bits):
    return -(1 << (bits - 1)) <= value < (1 << (bits - 1))


def _name(rtype):
    return RELOCATION_NAMES.get(rtype, "type %d" % rtype)


def _too_far(rtype, place, target, span):
    return PurgatoryError("%s at %#x cannot reach %#x (more than %s away); the purgatory object is laid out "
                          "wrongly, rebuild it with purgatory/build.py" % (_name(rtype), place, target, span))


def _set_adr_immediate(insn, value):
    """ADR/ADRP: a 21-bit immediate split into immlo (bits 30:29) and immhi (bits 23:5)."""
    value &= (1 << 21) - 1
    return (insn & ~((0x3 << 29) | (0x7FFFF << 5))) | ((value & 0x3) << 29) | ((value >> 2) << 5)


def patch_instruction(rtype, insn, symbol_value, addend, place):
    """The instruction word ``insn`` with relocation ``rtype`` applied (S, A, P as in AAELF64)."""
    target = symbol_value + addend
    if rtype in (R_AARCH64_ADR_PREL_PG_HI21, R_AARCH64_ADR_PREL_PG_HI21_NC):
        delta = _page(target) - _page(place)
        if rtype == R_AARCH64_ADR_PREL_PG_HI21 and not _signed_fits(delta, 33):
            raise _too_far(rtype, place, target, "4 GiB")
        return _set_adr_immediate(insn, delta >> 12)
    if rtype == R_AARCH64_ADR_PREL_LO21:
        delta = target - place
        if not _signed_fits(delta, 21):
            raise _too_far(rtype, place, target, "1 MiB")
        return _set_adr_immediate(insn, delta)
    if rtype == R_AARCH64_ADD_ABS_LO12_NC:
        return (insn & ~(0xFFF << 10)) | ((target & 0xFFF) << 10)
    if rtype in _LDST_SHIFT:
        shift = _LDST_SHIFT[rtype]
        low = target & 0xFFF
        if low & ((1 << shift) - 1):
            raise PurgatoryError("%s at %#x: %#x is not aligned to the %d-byte access the instruction makes; the "
                                 "object's data is misaligned, rebuild it with purgatory/build.py"
                                 % (_name(rtype), place, target, 1 << shift))
        return (insn & ~(0xFFF << 10)) | ((low >> shift) << 10)
    if rtype in _BRANCH:
        bits, lsb = _BRANCH[rtype]
        delta = target - place
        if delta & 3:
            raise PurgatoryError("%s at %#x: target %#x is not 4-byte aligned" % (_name(rtype), place, target))
        if not _signed_fits(delta, bits + 2):
            raise _too_far(rtype, place, target, "%d MiB" % (1 << (bits + 2 - 21)) if bits + 2 > 20
                           else "%d KiB" % (1 << (bits + 2 - 11)))
        mask = ((1 << bits) - 1) << lsb
        return (insn & ~mask) | (((delta >> 2) << lsb) & mask)
    raise PurgatoryError("purgatory object uses relocation %s, which this linker does not support; rebuild it "
                         "with purgatory/build.py" % _name(rtype))


def relocate_data(rtype, symbol_value, addend, place):
    """(value, struct code) for a data relocation."""
    size, fmt, low, high, relative = _DATA[rtype]
    value = symbol_value + addend - (place if relative else 0)
    if not low <= value <= high:
        raise PurgatoryError("%s at %#x: %#x does not fit %d bits" % (_name(rtype), place, value, 8 * size))
    return value & ((1 << (8 * size)) - 1), fmt


class Arm64Relocator(Relocator):
    """Applies R_AARCH64_* relocations (data words of 2, 4 or 8 bytes; 4-byte instructions)."""

    machine = EM_AARCH64
    name = "arm64"
    none_types = frozenset([R_AARCH64_NONE])

    def width(self, rtype):
        if rtype in _DATA:
            return _DATA[rtype][0]
        return 4

    def apply(self, image, offset, rtype, symbol_value, addend, place, obj, base):
        if rtype in _DATA:
            value, fmt = relocate_data(rtype, symbol_value, addend, place)
            struct.pack_into(fmt, image, offset, value)
            return
        if offset % 4:
            raise PurgatoryError("%s at %#x patches an instruction that is not 4-byte aligned" % (_name(rtype), place))
        insn = struct.unpack_from("<I", image, offset)[0]
        struct.pack_into("<I", image, offset, patch_instruction(rtype, insn, symbol_value, addend, place))


RELOCATOR = Arm64Relocator()
