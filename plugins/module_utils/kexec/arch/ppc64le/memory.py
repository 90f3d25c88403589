# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel virtual addresses of a crashed ppc64 kernel, read through its vmcore (dump/vmcore.py).

Book3S-64 runs the kernel in its linear map: virtual = KERNELBASE (0xc000000000000000) +
physical, for the kernel image and for everything allocated from memblock or the page
allocator, which is where the printk ringbuffer lives.  vmalloc and I/O addresses lie above the
linear map and would need the crashed kernel's page tables; the log never needs them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...dump.vmcore import KernelMemory, VmcoreError
from .elf_kernel import KERNELBASE

#: The default page size of the Debian and most distribution ppc64le kernels, when the note is silent.
DEFAULT_PAGE_SIZE = 65536
_M64 = (1 << 64) - 1


class Ppc64Memory(KernelMemory):
    """Linear-map reads from an ElfCore; ``page_size`` is the crashed kernel's (VMCOREINFO PAGESIZE)."""

    def __init__(self, core, info):
        self.core = core
        try:
            self.page_size = int(info.entries.get("PAGESIZE", DEFAULT_PAGE_SIZE))
        except ValueError:
            raise VmcoreError("VMCOREINFO PAGESIZE=%r is not a number" % info.entries.get("PAGESIZE"))
        if self.page_size < 4096 or self.page_size & (self.page_size - 1):
            raise VmcoreError("VMCOREINFO PAGESIZE=%d is not a page size" % self.page_size)
        # The linear map covers the physical memory the dump describes, and no more.
        self.linear_end = KERNELBASE + max([start + memsz for start, _off, _filesz, memsz, _v in core.loads] or [0])

    def vtop(self, vaddr):
        """Physical address of linear-map address ``vaddr``."""
        vaddr &= _M64
        if not KERNELBASE <= vaddr < self.linear_end:
            raise VmcoreError("virtual address %#x is outside the crashed kernel's linear map (%#x-%#x); only "
                              "linear-map addresses are read from ppc64 dumps" % (vaddr, KERNELBASE, self.linear_end))
        return vaddr - KERNELBASE
