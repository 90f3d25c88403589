# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ELF core header (``elfcorehdr``) a capture kernel reads to find the crashed kernel.

An ELF64 ET_CORE header whose program headers say where the crashed kernel's memory and notes
are: one PT_NOTE per CPU (crash_notes), one for vmcoreinfo, one PT_LOAD for the kernel text
mapping and one per range of System RAM outside the crash region.  For PT_LOAD and PT_NOTE alike
``p_offset`` is the *physical address* the capture kernel reads from (that is how /proc/vmcore
finds the bytes, parse_crash_elf_headers), ``p_paddr`` the address the data had in the crashed
kernel.  The kernel's own kexec_file_load builds the same header (crash_prepare_elf64_headers);
with kexec_load the loader does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ..core.memmap import subtract
from ..errors import HostError, PlanError

ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
PF_RWX = 7

_U64 = (1 << 64) - 1


def _check_u64(what, addr, size):
    if not (0 <= addr <= _U64 and 0 <= size <= _U64 and addr + size <= _U64 + 1):
        raise HostError("the %s at %#x+%#x does not fit 64-bit addresses; the host's crash facts are "
                        "corrupted (re-read or re-record them)" % (what, addr, size))


def dump_loads(facts, crash_regions, backup=None):
    """The PT_LOADs: [{"paddr", "offset", "size", "vaddr"}] in address order.

    System RAM minus every crash region (the capture kernel's own memory is not evidence);
    ranges inside the backup span read from the copy at ``backup[1]`` (``backup`` is
    (src, dst, len)).  The kernel text mapping comes first, as dump tools expect.
    """
    loads = []
    if facts.kernel_text:
        t = facts.kernel_text
        loads.append({"paddr": t["paddr"], "offset": t["paddr"], "size": t["size"], "vaddr": t["vaddr"]})
    holes = [(r.start, r.end) for r in crash_regions]
    for r in subtract(facts.ram, holes):
        pieces = [(r.start, r.end)]
        if backup and backup[2]:
            src, dst, length = backup
            lo, hi = max(r.start, src), min(r.end, src + length)
            if lo < hi:
                pieces = [p for p in ((r.start, lo), (hi, r.end)) if p[1] > p[0]]
                vaddr = facts.page_offset + lo if facts.page_offset is not None else 0
                loads.append({"paddr": lo, "offset": dst + (lo - src), "size": hi - lo, "vaddr": vaddr})
        for start, end in pieces:
            vaddr = facts.page_offset + start if facts.page_offset is not None else 0
            loads.append({"paddr": start, "offset": start, "size": end - start, "vaddr": vaddr})
    head, rest = loads[:1 if facts.kernel_text else 0], loads[1 if facts.kernel_text else 0:]
    return head + sorted(rest, key=lambda d: d["paddr"])


def elfcorehdr_size(facts):
    """Bytes of the ELF core header for ``facts`` (the backup split adds at most one PT_LOAD)."""
    count = len(facts.notes) + (1 if facts.vmcoreinfo else 0) + (1 if facts.kernel_text else 0)
    count += len(facts.ram) * 2 + 2  # a crash region or the backup span can split a range in two
    return ELF_HEADER.size + count * PROGRAM_HEADER.size


def build_elfcorehdr(notes, loads, machine):
    """An ELF64 little-endian ET_CORE header for e_machine ``machine``: PT_NOTEs first
    (``notes``: [(address, size)]), then the PT_LOADs (``loads`` as from dump_loads).

    Every value is range-checked before it is packed: a host fact that does not fit 64 bits is
    a corrupted recording, said as such, not a struct.error."""
    for addr, size in notes:
        _check_u64("crash note", addr, size)
    for ld in loads:
        _check_u64("dump range", ld["paddr"], ld["size"])
    phdrs = []
    for addr, size in notes:
        phdrs.append(PROGRAM_HEADER.pack(PT_NOTE, 0, addr, 0, addr, size, size, 0))
    for ld in loads:
        phdrs.append(PROGRAM_HEADER.pack(PT_LOAD, PF_RWX, ld["offset"], ld["vaddr"], ld["paddr"],
                                         ld["size"], ld["size"], 0))
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1, SysV
    header = ELF_HEADER.pack(ident, ET_CORE, machine, 1, 0, ELF_HEADER.size, 0, 0, ELF_HEADER.size,
                             PROGRAM_HEADER.size, len(phdrs), 0, 0, 0)
    return header + b"".join(phdrs)


def fill_elfcorehdr(segment, facts, loads, machine):
    """Build the header for ``facts`` and ``loads`` (e_machine ``machine``) into ``segment``, a
    reservation of elfcorehdr_size(facts) bytes; returns the PT_NOTE (address, size) list."""
    notes = [(a, s) for _cpu, a, s in facts.notes]
    if facts.vmcoreinfo:
        notes.append(facts.vmcoreinfo)
    data = build_elfcorehdr(notes, loads, machine)
    if len(data) > segment.memsz:  # elfcorehdr_size() over-counts; this is a loader bug
        raise PlanError("the ELF core header grew to %d bytes, more than the %d reserved" % (len(data), segment.memsz))
    segment.set_buffer(data)
    return notes
