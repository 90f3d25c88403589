# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host facts only the live device tree holds, read property by property (the whole tree is
large and only an architecture that boots from it reads it all).

The crash region: kernels that keep it out of /proc/iomem export it in ``/chosen`` for loaders
(``linux,crashkernel-base`` and ``-size``, each a big-endian number of 4 or 8 bytes; powerpc's
export_crashk_values()).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import HostError

CRASH_BASE = "proc/device-tree/chosen/linux,crashkernel-base"
CRASH_SIZE = "proc/device-tree/chosen/linux,crashkernel-size"


def _number(tree, rel):
    data = tree.read_bytes(rel)
    if data is None:
        return None
    if len(data) not in (4, 8):
        raise HostError("%s is %d bytes, not a 4- or 8-byte number; the device tree is not what Linux exports"
                        % (tree.path(rel), len(data)))
    return int.from_bytes(data, "big")


def chosen_crash_region(tree):
    """(start, end) of the crash region ``/chosen`` names, or None when it names none."""
    base, size = _number(tree, CRASH_BASE), _number(tree, CRASH_SIZE)
    if base is None or not size:
        return None
    if base + size > 1 << 64:
        raise HostError("%s and %s describe a region past the 64-bit address space; the device tree is corrupted"
                        % (tree.path(CRASH_BASE), tree.path(CRASH_SIZE)))
    return base, base + size
