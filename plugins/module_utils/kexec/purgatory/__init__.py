# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Put a purgatory into a plan: hash every segment, reserve the purgatory's own segment, link it
there and make it the plan's entry point.  What is the same on every architecture lives here;
``arch/<arch>/purgatory.py`` says which values its entry code reads and where it may be placed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ..errors import PurgatoryError
from .regions import REGIONS_SYMBOL, pack_regions, region_table

ENTRY_SYMBOL = "purgatory_start"
#: Crash loads: low memory the purgatory copies into the crash region before entering the
#: capture kernel (src, dst, len; len 0 means no copy).
BACKUP_SYMBOLS = ("fleetboot_backup_src", "fleetboot_backup_dst", "fleetboot_backup_len")

_U64 = (1 << 64) - 1


class LinkedPurgatory:
    """What ``link_purgatory`` did: the segment, the entry address, the verified regions."""

    def __init__(self, segment, entry, regions, obj, backup=None):
        self.segment = segment
        self.entry = entry
        self.regions = regions
        self.object = obj
        self.backup = backup

    def symbol_address(self, name):
        """Physical address of purgatory symbol *name* in the linked segment."""
        return self.segment.mem + self.object.symbol_offset(name)

    def to_dict(self):
        """Plain-value form for plans and CLI output."""
        return {
            "mem": self.segment.mem,
            "memsz": self.segment.memsz,
            "entry": self.entry,
            "regions": [{"start": start, "len": length, "sha256": sha.hex()}
                        for start, length, sha in self.regions],
            "backup": (None if not self.backup else
                       {"src": self.backup[0], "dst": self.backup[1], "len": self.backup[2]}),
        }


def _check_backup(plan, backup):
    """Validate a crash load's (src, dst, len) backup copy against the plan: the destination
    must be a reserved segment of the plan big enough for ``len`` bytes, and never overlap the
    source (the copy runs forwards, byte by byte)."""
    if not backup or not backup[2]:
        return (0, 0, 0)
    src, dst, length = backup
    for name, value in (("source", src), ("destination", dst), ("length", length)):
        if not isinstance(value, int) or not 0 <= value <= _U64:
            raise PurgatoryError("the backup region %s %r is not a 64-bit value" % (name, value))
    if not any(seg.mem <= dst and dst + length <= seg.mem + seg.memsz for seg in plan.segments):
        raise PurgatoryError("the backup copy %#x+%#x lies in no segment of the plan; reserve it first"
                             % (dst, length))
    if src < dst + length and dst < src + length:
        raise PurgatoryError("the backup copy %#x+%#x overlaps its source %#x+%#x" % (dst, length, src, length))
    return (src, dst, length)


def link_purgatory(plan, obj, values, min_addr=0, max_addr=None, entry_symbol=ENTRY_SYMBOL, backup=None):
    """Reserve, link and fill the purgatory segment; set ``plan.entry`` to the purgatory.

    Call it last: the digests cover every segment already in *plan*, so any segment added or
    patched afterwards would make the purgatory refuse to boot.  *obj* is the architecture's
    PurgatoryObject, *values* maps the symbols its entry code reads to their exact bytes (the
    region table and the backup copy are added here), *min_addr*/*max_addr* bound its placement.
    *backup* (crash loads) is ``(src, dst, len)``: after verifying, the purgatory copies ``len``
    bytes of low memory from ``src`` to ``dst``, a segment of the plan.  Returns a LinkedPurgatory.
    """
    if plan.segment("purgatory") is not None:
        raise PurgatoryError("the plan already has a purgatory segment; link it only once")
    backup = _check_backup(plan, backup)
    # Hash before reserving, so the reservation itself is not part of the table.
    regions = region_table(list(plan.segments))
    # Top-down keeps it away from the low memory where kernels are usually placed; for crash
    # loads the planner confines the window to the crash region.
    seg = plan.reserve("purgatory", obj.size, align=max(obj.align, plan.page_size), min_addr=min_addr,
                       max_addr=max_addr, top_down=True)
    values = dict(values)
    values[REGIONS_SYMBOL] = pack_regions(regions)
    for name, value in zip(BACKUP_SYMBOLS, backup):
        values[name] = struct.pack("<Q", value)
    try:
        image = obj.link(seg.mem, values)
    except PurgatoryError:
        plan.segments.remove(seg)  # leave the plan as it was
        raise
    seg.set_buffer(bytes(image))
    plan.entry = seg.mem + obj.symbol_offset(entry_symbol)
    return LinkedPurgatory(seg, plan.entry, regions, obj, backup if backup[2] else None)


def pack_u64(name, value):
    """``value`` as the 8 little-endian bytes of a u64 purgatory variable (PurgatoryError when it
    is not a 64-bit address)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64:
        raise PurgatoryError("the %s %r is not a 64-bit physical address" % (name, value))
    return struct.pack("<Q", value)
