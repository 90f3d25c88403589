# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The x86_64 relocation types the purgatory object uses (x86-64 psABI, chapter 4.4).

gcc emits them for ``-mcmodel=large`` code: R_X86_64_64, 32, 32S, PC32, PLT32.  Each result is
checked against its field; nothing is ever truncated.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...core.elf import EM_X86_64
from ...errors import PurgatoryError
from ...purgatory.linker import Relocator

R_X86_64_NONE = 0
R_X86_64_64 = 1
R_X86_64_PC32 = 2
R_X86_64_PLT32 = 4
R_X86_64_32 = 10
R_X86_64_32S = 11

RELOCATION_NAMES = {
    R_X86_64_NONE: "R_X86_64_NONE",
    R_X86_64_64: "R_X86_64_64",
    R_X86_64_PC32: "R_X86_64_PC32",
    R_X86_64_PLT32: "R_X86_64_PLT32",
    R_X86_64_32: "R_X86_64_32",
    R_X86_64_32S: "R_X86_64_32S",
}
#: Types whose result must fit 32 bits: an object using them must sit low in memory.
ABSOLUTE_32 = frozenset([R_X86_64_32, R_X86_64_32S])

_U64 = (1 << 64) - 1


def _fits(value, bits, signed):
    if signed:
        return -(1 << (bits - 1)) <= value < (1 << (bits - 1))
    return 0 <= value < (1 << bits)


def relocate(rtype, symbol_value, addend, place):
    """Compute one x86_64 relocation; return (value, fmt) to store, fmt a struct code.

    ``symbol_value`` is S, ``addend`` A, ``place`` P (the patched byte's final address), as in
    the x86-64 psABI.  Raises PurgatoryError for unknown types and for results that do not fit
    the field, naming the relocation so the build can be fixed.
    """
    name = RELOCATION_NAMES.get(rtype, "type %d" % rtype)
    if rtype == R_X86_64_64:
        value = symbol_value + addend
        if not -(1 << 63) <= value <= _U64:
            raise PurgatoryError("%s result %#x does not fit 64 bits" % (name, value))
        return value & _U64, "<Q"
    if rtype in (R_X86_64_PC32, R_X86_64_PLT32):
        # Statically linked: there is no PLT, a PLT32 call goes straight to the function.
        value = symbol_value + addend - place
        if not _fits(value, 32, signed=True):
            raise PurgatoryError(
                "%s at %#x cannot reach %#x (displacement %#x does not fit a signed 32-bit field)"
                % (name, place, symbol_value + addend, value))
        return value & 0xFFFFFFFF, "<I"
    if rtype == R_X86_64_32:
        value = symbol_value + addend
        if not _fits(value, 32, signed=False):
            raise PurgatoryError("%s at %#x: %#x does not fit an unsigned 32-bit field; place the "
                                 "purgatory below 4 GiB" % (name, place, value))
        return value, "<I"
    if rtype == R_X86_64_32S:
        value = symbol_value + addend
        if not _fits(value, 32, signed=True):
            raise PurgatoryError("%s at %#x: %#x does not fit a sign-extended 32-bit field; place "
                                 "the purgatory below 2 GiB" % (name, place, value))
        return value & 0xFFFFFFFF, "<I"
    raise PurgatoryError("purgatory object uses relocation %s, which this linker does not "
                         "support; rebuild it with purgatory/build.py" % name)


class X86_64Relocator(Relocator):
    """Applies R_X86_64_* relocations (little-endian fields of 4 or 8 bytes)."""

    machine = EM_X86_64
    name = "x86_64"
    none_types = frozenset([R_X86_64_NONE])

    def width(self, rtype):
        return 8 if rtype == R_X86_64_64 else 4

    def apply(self, image, offset, rtype, symbol_value, addend, place, obj, base):
        value, fmt = relocate(rtype, symbol_value, addend, place)
        struct.pack_into(fmt, image, offset, value)


RELOCATOR = X86_64Relocator()
