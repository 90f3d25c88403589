"""Synthetic arm64 crash dumps: a crashed kernel with a linear map at PAGE_OFFSET, its image at a
KASLR address (kimage_voffset), stage 1 page tables under swapper_pg_dir (4, 16 or 64 KiB
granules, table/block/page descriptors as the Arm ARM describes them) and the VMCOREINFO an arm64
kernel publishes; the printk ringbuffer and the ELF core come from vmcore_builder.py.
Written from the architecture's rules, independent of the reader.
"""

import struct

from tests.unit.vmcore_builder import PageAllocator, PhysMemory

KIMAGE_VADDR = 0xffff800008000000
AF = 1 << 10  # the access flag every valid leaf has


class Arm64PageTables:
    """Stage 1 tables for TTBR1: ``map_page()`` with a page, or a block at a higher level."""

    def __init__(self, mem, alloc, va_bits=48, granule=4096):
        self.mem, self.alloc, self.va_bits, self.granule = mem, alloc, va_bits, granule
        self.shift = granule.bit_length() - 1
        per = self.shift - 3
        self.shifts = []
        s = self.shift
        while s < va_bits:
            self.shifts.append(s)
            s += per
        self.shifts.reverse()
        self.top = self._table()

    def _table(self):
        return self.alloc.pages(self.granule // 4096, align=self.granule)

    def _index(self, vaddr, shift):
        bits = min(self.shift - 3, self.va_bits - shift)
        return (vaddr >> shift) & ((1 << bits) - 1)

    def map_page(self, vaddr, paddr, size=None):
        size = size or self.granule
        leaf = size.bit_length() - 1
        assert leaf in self.shifts, "builder: no level maps %#x bytes with this granule" % size
        table = self.top
        for shift in self.shifts:
            slot = table + self._index(vaddr, shift) * 8
            if shift == leaf:
                kind = 0b11 if shift == self.shift else 0b01  # page at the last level, else block
                self.mem.put(slot, "Q", paddr | AF | kind | (1 << 54))  # UXN: attributes must be masked off
                return
            desc = struct.unpack("<Q", self.mem.read(slot, 8))[0]
            if not desc & 1:
                desc = self._table() | 0b11
                self.mem.put(slot, "Q", desc)
            table = desc & ((1 << 48) - 1) & ~(self.granule - 1)

    def map(self, vaddr, paddr, size, page_size=None):
        page_size = page_size or self.granule
        for off in range(0, size, page_size):
            self.map_page(vaddr + off, paddr + off, page_size)


class Kernel:
    """A synthetic crashed arm64 kernel (same interface as vmcore_builder.Kernel for Ringbuffer)."""

    def __init__(self, ram=((0x40000000, 0xA00000),), va_bits=48, granule=4096, slide=0x1200000,
                 release="6.1.0-test", stext=True, linear_slide=0):
        self.mem = PhysMemory(ram)
        start, size = ram[0]
        # KASLR also moves the linear map: RAM's start then sits linear_slide bytes into it, and
        # PHYS_OFFSET (memstart_addr) is start - linear_slide, modulo 2**64.
        self.phys_offset = (start - linear_slide) & ((1 << 64) - 1)
        self.page_offset = (1 << 64) - (1 << va_bits)
        self.VMALLOC = KIMAGE_VADDR + 0x10000000
        self.image_phys = start + 0x200000  # the Image 2 MiB into RAM, as a loader puts it
        self.image_vaddr = KIMAGE_VADDR + slide
        self.kimage_voffset = self.image_vaddr - self.image_phys
        self.image_next = self.image_phys + 0x10000  # _stext follows the head
        self.alloc = PageAllocator(start + 0x400000, start + size)
        self.pt = Arm64PageTables(self.mem, self.alloc, va_bits, granule)
        self.info = {"OSRELEASE": release, "PAGESIZE": str(granule), "NUMBER(VA_BITS)": str(va_bits),
                     "NUMBER(kimage_voffset)": "0x%x" % self.kimage_voffset,
                     "NUMBER(PHYS_OFFSET)": "0x%x" % self.phys_offset, "KERNELOFFSET": "%x" % slide,
                     "SYMBOL(swapper_pg_dir)": "%x" % self.phys_to_image(self.pt.top)}
        if stext:
            self.info["SYMBOL(_stext)"] = "%x" % (self.image_vaddr + 0x10000)
        # The kernel maps its own image in swapper_pg_dir too (with 2 MiB blocks when it can:
        # KASLR keeps virtual and physical addresses congruent modulo 2 MiB).
        assert (self.image_vaddr - self.image_phys) % 0x200000 == 0
        self.pt.map(self.image_vaddr, self.image_phys, 0x200000, 0x200000 if granule == 4096 else granule)

    def phys_to_image(self, paddr):
        return paddr + self.kimage_voffset

    def image_var(self, size, align=8):
        paddr = (self.image_next + align - 1) & ~(align - 1)
        self.image_next = paddr + size
        assert self.image_next <= self.image_phys + 0x200000
        return self.phys_to_image(paddr), paddr

    def direct_va(self, paddr):
        """The linear map: translated by arithmetic, no tables needed."""
        return (self.page_offset + paddr - self.phys_offset) & ((1 << 64) - 1)

    def vtop(self, vaddr):
        """Walk our own tables (the builder's, to scatter vmalloc pages)."""
        table = self.pt.top
        for shift in self.pt.shifts:
            desc = struct.unpack("<Q", self.mem.read(table + self.pt._index(vaddr, shift) * 8, 8))[0]
            addr = desc & ((1 << 48) - 1)
            if shift == self.pt.shift or not desc & 2:
                return (addr & ~((1 << shift) - 1)) | (vaddr & ((1 << shift) - 1))
            table = addr & ~(self.pt.granule - 1)
        raise AssertionError("unreachable")

    def vmcoreinfo(self):
        return "".join("%s=%s\n" % kv for kv in self.info.items()).encode()
