# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Does a capture kernel fit the crash region?  Refused early with both sizes and the size to use."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..core.memmap import align_up
from ..errors import PlanError

#: Room the loader asks for in the crash region on top of kernel and initrd: boot data,
#: purgatory, the ELF core header, the backup copy and the kernel's own control pages.
LOADER_OVERHEAD = 2 << 20

_MIB = float(1 << 20)


def mib(n):
    """``n`` bytes as "123.4 MiB"."""
    return "%.1f MiB" % (n / _MIB)


def check_fits(region, kernel_bytes, initrd_bytes, overhead=LOADER_OVERHEAD, page_size=4096):
    """Refuse, naming both sizes, a crash image the crash region cannot hold."""
    need = align_up(kernel_bytes, page_size) + align_up(initrd_bytes, page_size) + overhead
    if need > region.size:
        raise PlanError(
            "the crash kernel does not fit the crash region: it needs %s (kernel %s with its "
            "decompression space, initrd %s, %s for boot data, purgatory, core header and backup) "
            "but the crash region %#x-%#x holds %s; reserve more with crashkernel= on the kernel "
            "command line (e.g. crashkernel=%dM) or use a smaller initrd"
            % (mib(need), mib(kernel_bytes), mib(initrd_bytes), mib(overhead), region.start,
               region.end - 1, mib(region.size), _suggestmib(need)))
    return need


def _suggestmib(need):
    """A crashkernel= size covering ``need`` and room for the capture kernel to run."""
    mib = int(need / _MIB) + 1
    return max(256, (mib * 2 + 63) // 64 * 64)
