# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel virtual addresses of a crashed x86_64 kernel, read through its vmcore (dump/vmcore.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...dump.vmcore import KernelMemory, VmcoreError

START_KERNEL_MAP = 0xffffffff80000000
DEFAULT_KERNEL_IMAGE_SIZE = 1 << 30  # the x86_64 value with KASLR; the note says when it differs
PAGE_SIZE = 4096
_M64 = (1 << 64) - 1
_PTE_PRESENT = 0x1
_PTE_LARGE = 0x80
_PTE_ADDR = 0x000ffffffffff000
_U64 = struct.Struct("<Q")


class X86_64Memory(KernelMemory):
    """Kernel virtual addresses of the crashed x86_64 kernel, read through an ElfCore.

    Kernel-image addresses translate by ``vaddr - __START_KERNEL_map + phys_base``: phys_base
    already holds the physical KASLR offset, and SYMBOL() values are the relocated addresses, so
    KERNELOFFSET is not part of the formula.  Everything else (direct map, vmalloc, modules) is
    found by walking the crashed kernel's own page tables from ``init_top_pgt``.
    """

    def __init__(self, core, info):
        self.core = core
        info.require(("NUMBER(phys_base)",), "kernel memory")
        self.phys_base = info.number("phys_base") & _M64
        self.image_size = info.number("KERNEL_IMAGE_SIZE", DEFAULT_KERNEL_IMAGE_SIZE)
        self.levels = 5 if info.number("pgtable_l5_enabled", 0) == 1 else 4
        self.sme_mask = info.number("sme_mask", 0) & _M64
        self._pgd = info.symbol("init_top_pgt") if info.has("SYMBOL(init_top_pgt)") else None
        self._pages = {}

    def _walk(self, vaddr):
        if self._pgd is None:
            raise VmcoreError("cannot translate %#x: the crashed kernel's VMCOREINFO lacks SYMBOL(init_top_pgt)" % vaddr)
        table = self._image_to_phys(self._pgd)
        shifts = (48, 39, 30, 21, 12) if self.levels == 5 else (39, 30, 21, 12)
        for shift in shifts:
            index = (vaddr >> shift) & 511
            entry = _U64.unpack(self.core.read_phys(table + index * 8, 8))[0]
            if not entry & _PTE_PRESENT:
                raise VmcoreError("virtual address %#x is not mapped in the crashed kernel (no entry at level %d)"
                                  % (vaddr, shift))
            addr = entry & _PTE_ADDR & ~self.sme_mask
            if shift == 12 or (shift in (21, 30) and entry & _PTE_LARGE):
                span = (1 << shift) - 1
                return (addr & ~span) | (vaddr & span)
            table = addr
        raise VmcoreError("page-table walk for %#x did not end" % vaddr)  # pragma: no cover - loop returns

    def _image_to_phys(self, vaddr):
        return (vaddr - START_KERNEL_MAP + self.phys_base) & _M64

    def vtop(self, vaddr):
        """Physical address of kernel virtual address ``vaddr``."""
        vaddr &= _M64
        if START_KERNEL_MAP <= vaddr < START_KERNEL_MAP + self.image_size:
            return self._image_to_phys(vaddr)
        page = vaddr & ~0xfff
        if page not in self._pages:
            self._pages[page] = self._walk(page)
        return self._pages[page] | (vaddr & 0xfff)
