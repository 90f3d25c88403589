# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel virtual addresses of a crashed arm64 kernel, read through its vmcore (dump/vmcore.py).

The arm64 kernel publishes what a reader needs in its VMCOREINFO (arch_crash_save_vmcoreinfo):
``NUMBER(VA_BITS)``, ``NUMBER(kimage_voffset)`` and ``NUMBER(PHYS_OFFSET)`` (both hexadecimal),
``NUMBER(TCR_EL1_T1SZ)`` when the kernel's VA size is decided at boot (52-bit builds), and
``PAGESIZE``.  Three kinds of address follow:

- the **linear map**: __pa(va) = va - PAGE_OFFSET + PHYS_OFFSET (modulo 2**64), where the map starts at
  -(1 << VA_BITS) and spans half the kernel's VA space (Linux 5.4 and later; before, it was the
  upper half);
- the **kernel image**: __pa_symbol(va) = va - kimage_voffset (the KASLR slide is in it), which
  finds ``swapper_pg_dir``;
- anything else by walking the crashed kernel's own page tables from ``swapper_pg_dir`` (the
  stage 1 translation table format of the Arm ARM, D8: 4, 16 or 64 KiB granules, table/block/page
  descriptors).  The image is mapped there too, and it sits inside the vmalloc area (Linux 5.x and
  6.x put VMALLOC_START right at the image's base), so no address range tells an image address
  from a vmalloc one: the walk answers for both, and the image formula is only the fallback of a
  note without ``swapper_pg_dir``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...dump.vmcore import KernelMemory, VmcoreError

_M64 = (1 << 64) - 1
_U64 = struct.Struct("<Q")
#: Output address bits of a descriptor (48-bit physical addresses).
_OA_MASK = ((1 << 48) - 1)
#: The kernel image is a few tens of MiB; anything this far above _stext is not in it.
_IMAGE_SPAN = 1 << 30
_IMAGE_BEFORE_STEXT = 2 << 20


def _entry(info, key, base):
    """A number of the note; "0x..." is hexadecimal whatever ``base`` (6.1 prints
    NUMBER(TCR_EL1_T1SZ)=0x10 with %llx, seen in a lab dump)."""
    if key not in info.entries:
        raise VmcoreError("the crashed kernel's VMCOREINFO lacks %s" % key)
    text = info.entries[key]
    if text[:2].lower() == "0x":
        base = 16
    try:
        return int(text, base) & _M64
    except ValueError:
        raise VmcoreError("VMCOREINFO %s=%r is not a number" % (key, info.entries[key]))


def _release(info):
    """(major, minor) of OSRELEASE, or None."""
    text = info.entries.get("OSRELEASE", "")
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1].split("-")[0])
    except (IndexError, ValueError):
        return None


class Arm64Memory(KernelMemory):
    """Kernel virtual addresses of the crashed arm64 kernel, read through an ElfCore."""

    def __init__(self, core, info):
        self.core = core
        info.require(("NUMBER(VA_BITS)", "NUMBER(kimage_voffset)", "NUMBER(PHYS_OFFSET)"), "kernel memory")
        self.va_bits = _entry(info, "NUMBER(VA_BITS)", 10)
        if "NUMBER(TCR_EL1_T1SZ)" in info.entries:
            # 52-bit builds run with 48 bits on CPUs without LVA: T1SZ says what this boot used.
            self.va_bits = 64 - _entry(info, "NUMBER(TCR_EL1_T1SZ)", 10)
        if not 36 <= self.va_bits <= 52:
            raise VmcoreError("VMCOREINFO says the kernel used %d-bit virtual addresses; arm64 uses 36 to 52"
                              % self.va_bits)
        self.kimage_voffset = _entry(info, "NUMBER(kimage_voffset)", 0)
        self.phys_offset = _entry(info, "NUMBER(PHYS_OFFSET)", 0)
        self.page_size = _entry(info, "PAGESIZE", 10) if "PAGESIZE" in info.entries else 4096
        if self.page_size not in (4096, 16384, 65536):
            raise VmcoreError("VMCOREINFO says PAGESIZE=%d; arm64 pages are 4, 16 or 64 KiB" % self.page_size)
        self.page_shift = self.page_size.bit_length() - 1
        stext = _entry(info, "SYMBOL(_stext)", 16) if info.has("SYMBOL(_stext)") else None
        half = (_M64 + 1) - (1 << (self.va_bits - 1))
        if stext is not None:
            # Linux 5.4 moved the linear map to the lower half and the image to the upper one.
            flipped = stext >= half
        else:
            release = _release(info)
            flipped = release is None or release >= (5, 4)
        if flipped:
            self.linear = ((_M64 + 1) - (1 << self.va_bits), half)
        else:
            self.linear = (half, _M64 + 1)
        self.image = (stext - _IMAGE_BEFORE_STEXT, stext + _IMAGE_SPAN) if stext is not None else None
        self._pgd = info.symbol("swapper_pg_dir") if info.has("SYMBOL(swapper_pg_dir)") else None
        self._pages = {}

    # -- translation ------------------------------------------------------------------------

    def _image_to_phys(self, vaddr):
        return (vaddr - self.kimage_voffset) & _M64

    def _levels(self):
        """[(shift, index bits)] from the top level down to the page level."""
        per_level = self.page_shift - 3
        shifts = []
        shift = self.page_shift
        while shift < self.va_bits:
            shifts.append(shift)
            shift += per_level
        shifts.reverse()
        return [(s, min(per_level, self.va_bits - s)) for s in shifts]

    def _walk(self, vaddr):
        if self._pgd is None:
            raise VmcoreError("cannot translate %#x: the crashed kernel's VMCOREINFO lacks SYMBOL(swapper_pg_dir)" % vaddr)
        table = self._image_to_phys(self._pgd)
        levels = self._levels()
        granule_mask = self.page_size - 1
        for depth, (shift, bits) in enumerate(levels):
            index = (vaddr >> shift) & ((1 << bits) - 1)
            desc = _U64.unpack(self.core.read_phys(table + index * 8, 8))[0]
            if not desc & 1:
                raise VmcoreError("virtual address %#x is not mapped in the crashed kernel (no entry at level %d)"
                                  % (vaddr, depth))
            last = depth == len(levels) - 1
            if last or not desc & 2:
                if last and not desc & 2:
                    raise VmcoreError("virtual address %#x: reserved descriptor %#x at the page level" % (vaddr, desc))
                span = (1 << shift) - 1
                return (desc & _OA_MASK & ~span) | (vaddr & span)
            table = desc & _OA_MASK & ~granule_mask
        raise VmcoreError("page-table walk for %#x did not end" % vaddr)  # pragma: no cover - loop returns

    def vtop(self, vaddr):
        """Physical address of kernel virtual address ``vaddr``."""
        vaddr &= _M64
        if self.linear[0] <= vaddr < self.linear[1]:
            # Modulo 2**64: with the linear map randomized (KASLR's memstart_offset_seed) the
            # kernel's PHYS_OFFSET is RAM's start minus the slide, and wraps below zero.
            return (vaddr - self.linear[0] + self.phys_offset) & _M64
        if self._pgd is None and self.image is not None and self.image[0] <= vaddr < self.image[1]:
            # No tables to walk: near _stext it can only be the image.
            return self._image_to_phys(vaddr)
        page = vaddr & ~(self.page_size - 1)
        if page not in self._pages:
            self._pages[page] = self._walk(page)
        return self._pages[page] | (vaddr & (self.page_size - 1))
