# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""/sys/firmware/memmap: the firmware's memory map as the running kernel received it (e820 on x86),
world-readable, so a plan needs no root."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..core.memmap import Range
from ..errors import HostError
from .sysroot import as_sysroot

#: More entries than any firmware map has: a directory listing more is corrupt.
MAX_ENTRIES = 1 << 16


def read_firmware_memmap(sysroot):
    """Ranges from /sys/firmware/memmap/N/{start,end,type} (inclusive end there); None when absent."""
    tree = as_sysroot(sysroot)
    names = tree.listdir("sys/firmware/memmap")
    if names is None:
        return None
    names = [n for n in names if n.isdigit()]
    if len(names) > MAX_ENTRIES:
        raise HostError("%s lists %d entries, more than any firmware map has; it is corrupted"
                        % (tree.path("sys/firmware/memmap"), len(names)))
    entries = []
    for name in sorted(names, key=int):
        rel = "sys/firmware/memmap/" + name
        start = tree.read_int(rel + "/start", 16)
        end = tree.read_int(rel + "/end", 16)
        rtype = tree.read_text(rel + "/type")
        if start is None or end is None or rtype is None:
            raise HostError("%s is incomplete (needs start, end and type); re-record the memory map" % tree.path(rel))
        if end < start or end >= (1 << 64) - 1:
            raise HostError("%s: end %#x below start %#x or at the top of the address space; the firmware map "
                            "is corrupted" % (tree.path(rel), end, start))
        entries.append(Range(start, end + 1, rtype.strip()))
    if not entries:
        return None
    return entries
