# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The RAM an arm64 kexec may place segments in.

arm64 has no firmware memory map in sysfs; /proc/iomem is the map.  Its top level lists System
RAM (and "reserved" for the firmware's no-map regions); *inside* System RAM the running kernel
lists, as "reserved", every range memblock had reserved at boot: the device tree, the EFI memory
map, ACPI tables, the GICv3 LPI tables the firmware and the kernel keep across kexec, and others
that only the running kernel uses.  From userspace the ones the next kernel still needs cannot be
told from the others, so none of them is used for a segment (kexec-tools' arm64 memory ranges do
the same).  ``Kernel code``, ``Kernel data`` and ``Crash kernel`` are not "reserved" entries and
stay usable: the running kernel is gone once the new one starts, and a crash load places its
segments inside the crash region on purpose.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...core.memmap import RAM, MemoryMap, Range

RESERVED = "reserved"


def placement_map(host):
    """A MemoryMap whose ram() is System RAM minus the "reserved" ranges inside it."""
    iomem = getattr(host, "iomem", None)
    if not iomem:
        return host.memory_map
    ranges = [Range(n.start, n.end, n.name) for n in iomem]
    for top in iomem:
        if top.name != RAM:
            continue
        ranges.extend(Range(c.start, c.end, RESERVED) for c in top.children if c.name == RESERVED)
    return MemoryMap(ranges)
