"""Synthetic x86_64 crash dumps for the vmcore reader's tests.

Builds what a capture kernel would expose as /proc/vmcore: physical RAM ranges, the crashed
kernel's page tables (4- or 5-level, with 4 KiB, 2 MiB and 1 GiB pages), a printk ringbuffer laid
out by the same rules the kernel follows when it allocates records (including data blocks that
wrap to the start of the ring and descriptors recycled by newer ones), a VMCOREINFO note, and the
ELF64 core file around it all.  Written from the format's description, independent of the reader.
"""

import struct

START_KERNEL_MAP = 0xffffffff80000000
M64 = (1 << 64) - 1
ID_MASK = (1 << 62) - 1
RESERVED, COMMITTED, FINALIZED, REUSABLE = 0, 1, 2, 3
NO_LPOS, FAILED_LPOS = 0x3, 0x1

# The layout of Linux 6.1 (what the lab's Debian kernel published); tests may shift it.
LAYOUT_6_1 = {
    "OFFSET(printk_ringbuffer.desc_ring)": 0, "OFFSET(printk_ringbuffer.text_data_ring)": 48,
    "OFFSET(prb_desc_ring.count_bits)": 0, "OFFSET(prb_desc_ring.descs)": 8, "OFFSET(prb_desc_ring.infos)": 16,
    "OFFSET(prb_desc_ring.head_id)": 24, "OFFSET(prb_desc_ring.tail_id)": 32,
    "SIZE(prb_desc)": 24, "OFFSET(prb_desc.state_var)": 0, "OFFSET(prb_desc.text_blk_lpos)": 8,
    "OFFSET(prb_data_blk_lpos.begin)": 0, "OFFSET(prb_data_blk_lpos.next)": 8,
    "SIZE(printk_info)": 88, "OFFSET(printk_info.seq)": 0, "OFFSET(printk_info.ts_nsec)": 8,
    "OFFSET(printk_info.text_len)": 16, "OFFSET(printk_info.caller_id)": 20,
    "OFFSET(prb_data_ring.size_bits)": 0, "OFFSET(prb_data_ring.data)": 8,
    "OFFSET(prb_data_ring.head_lpos)": 16, "OFFSET(prb_data_ring.tail_lpos)": 24,
    "SIZE(atomic_long_t)": 8, "OFFSET(atomic_long_t.counter)": 0,
}


class PhysMemory:
    """A few ranges of physical RAM, zero-filled, written by physical address."""

    def __init__(self, ranges):
        self.ranges = [(start, bytearray(size)) for start, size in ranges]

    def _locate(self, paddr, size):
        for start, buf in self.ranges:
            if start <= paddr and paddr + size <= start + len(buf):
                return buf, paddr - start
        raise AssertionError("builder bug: %#x+%d is outside the synthetic RAM" % (paddr, size))

    def write(self, paddr, data):
        buf, off = self._locate(paddr, len(data))
        buf[off:off + len(data)] = data

    def read(self, paddr, size):
        buf, off = self._locate(paddr, size)
        return bytes(buf[off:off + size])

    def put(self, paddr, fmt, *values):
        self.write(paddr, struct.pack("<" + fmt, *values))


class PageAllocator:
    """Hands out zeroed 4 KiB physical pages from [start, end)."""

    def __init__(self, start, end):
        self.next, self.end = start, end

    def pages(self, count=1, align=4096):
        addr = (self.next + align - 1) & ~(align - 1)
        self.next = addr + count * 4096
        assert self.next <= self.end, "builder bug: out of synthetic pages"
        return addr


class PageTables:
    """x86_64 page tables in PhysMemory: ``map()`` a virtual range with a chosen page size."""

    def __init__(self, mem, alloc, levels=4):
        self.mem, self.alloc, self.levels = mem, alloc, levels
        self.top = alloc.pages()

    def _entry(self, table, index):
        return struct.unpack("<Q", self.mem.read(table + index * 8, 8))[0]

    def map_page(self, vaddr, paddr, page_size=4096):
        shifts = (48, 39, 30, 21, 12) if self.levels == 5 else (39, 30, 21, 12)
        leaf_shift = {4096: 12, 2 << 20: 21, 1 << 30: 30}[page_size]
        table = self.top
        for shift in shifts:
            index = (vaddr >> shift) & 511
            if shift == leaf_shift:
                flags = 0x63 | (0x80 if shift != 12 else 0)  # present, rw, accessed, dirty (+ PS)
                self.mem.put(table + index * 8, "Q", paddr | flags | (1 << 63))  # NX must be masked off
                return
            entry = self._entry(table, index)
            if not entry & 1:
                entry = self.alloc.pages() | 0x63
                self.mem.put(table + index * 8, "Q", entry)
            table = entry & 0x000ffffffffff000

    def map(self, vaddr, paddr, size, page_size=4096):
        for off in range(0, size, page_size):
            self.map_page(vaddr + off, paddr + off, page_size)


class Kernel:
    """A synthetic crashed kernel: RAM, image mapping by phys_base, page tables, vmcoreinfo."""

    def __init__(self, ram=((0x1000000, 0x600000),), phys_base=0x400000, levels=4):
        self.mem = PhysMemory(ram)
        self.phys_base = phys_base
        start, size = ram[0]
        # The image takes the first MiB of the first range; page-table and data pages follow.
        self.image_phys = start
        self.image_next = start
        self.alloc = PageAllocator(start + 0x100000, start + size)
        self.pt = PageTables(self.mem, self.alloc, levels)
        self.levels = levels
        self.info = {"OSRELEASE": "6.1.0-test", "PAGESIZE": "4096", "NUMBER(phys_base)": str(phys_base),
                     "NUMBER(pgtable_l5_enabled)": "1" if levels == 5 else "0", "KERNELOFFSET": "3e000000"}
        self.info["SYMBOL(init_top_pgt)"] = "%x" % self.phys_to_image(self.pt.top)

    def phys_to_image(self, paddr):
        return paddr - self.phys_base + START_KERNEL_MAP

    def image_var(self, size, align=8):
        """A variable in the kernel image: (vaddr, paddr)."""
        paddr = (self.image_next + align - 1) & ~(align - 1)
        self.image_next = paddr + size
        assert self.image_next <= self.image_phys + 0x100000
        return self.phys_to_image(paddr), paddr

    def vmcoreinfo(self):
        return "".join("%s=%s\n" % kv for kv in self.info.items()).encode()

    # Where Ringbuffer.place() puts things in the virtual address space (an arm64 kernel in
    # vmcore_builder_arm64.py answers these its own way).
    VMALLOC = 0xffffc90000000000

    def direct_va(self, paddr):
        """The direct-map address of ``paddr`` (mapped with 1 GiB pages)."""
        self.pt.map(0xffff888000000000, 0, 1 << 30, 1 << 30)
        return 0xffff888000000000 + paddr

    def vtop(self, vaddr):
        return _vtop(self, vaddr)


class Record:
    def __init__(self, desc_id, seq, text, ts_nsec, caller_id):
        self.id, self.seq, self.text, self.ts_nsec, self.caller_id = desc_id, seq, text, ts_nsec, caller_id
        self.begin = self.next = None
        self.state = FINALIZED


class Ringbuffer:
    """A lockless printk ringbuffer filled the way the kernel fills it.

    Data blocks are 8-byte aligned ``id + text``; a block that does not fit before the end of
    the ring starts the next wrap at index 0 (``exact_end_wraps`` picks the pre-6.x rule where a
    block ending exactly at the end also wraps).  When the data or descriptor ring is full the
    oldest records become reusable and their space is taken, as in the kernel.
    """

    def __init__(self, count_bits=4, size_bits=9, exact_end_wraps=False):
        self.count_bits, self.size_bits = count_bits, size_bits
        self.count, self.size = 1 << count_bits, 1 << size_bits
        self.exact_end_wraps = exact_end_wraps
        # Like the kernel, start the ids and positions just below their wrap-around points.
        self.head_id = (-(self.count + 1)) & ID_MASK
        self.tail_id = self.head_id
        self.head_lpos = self.tail_lpos = (-self.size) & M64
        self.slots = {}  # desc index -> Record (or the initial reusable descriptor)
        self.data = bytearray(self.size)
        self.seq = 0
        first = Record(self.head_id, 0, b"", 0, 0)
        first.state, first.begin, first.next = REUSABLE, FAILED_LPOS, FAILED_LPOS
        self.slots[self.head_id & (self.count - 1)] = first
        self.live = []  # records whose data is still in the ring, oldest first

    def _wraps(self, lpos):
        return (lpos & M64) >> self.size_bits

    def _next_lpos(self, begin, size):
        nxt = begin + size
        last = nxt if self.exact_end_wraps else nxt - 1
        if self._wraps(begin) == self._wraps(last):
            return nxt & M64
        return ((self._wraps(nxt) << self.size_bits) + size) & M64

    def _drop_oldest(self):
        rec = self.live.pop(0)
        rec.state = REUSABLE
        self.tail_lpos = rec.next

    def add(self, text, ts_nsec, caller_id=0x00000100, state=FINALIZED, lpos=None):
        """Append one record; returns it.  ``lpos`` forces a data-less (begin, next) pair."""
        desc_id = (self.head_id + 1) & ID_MASK
        if (desc_id - self.tail_id) & ID_MASK >= self.count:  # descriptor ring full: recycle the oldest
            old = self.slots[self.tail_id & (self.count - 1)]
            if old in self.live:
                self.live.remove(old)
            self.tail_id = (self.tail_id + 1) & ID_MASK
        rec = Record(desc_id, self.seq, text, ts_nsec, caller_id)
        rec.state = state
        self.seq += 1
        if lpos is not None:
            rec.begin, rec.next = lpos
        else:
            size = (8 + len(text) + 7) & ~7
            assert size <= self.size // 2, "builder: record too large for the ring"
            begin = self.head_lpos
            nxt = self._next_lpos(begin, size)
            while self.live and ((nxt - self.live[0].begin) & M64) > self.size:
                self._drop_oldest()
            rec.begin, rec.next = begin, nxt
            self.head_lpos = nxt
            self._store(rec, size)
            self.live.append(rec)
        self.slots[desc_id & (self.count - 1)] = rec
        self.head_id = desc_id
        return rec

    def _store(self, rec, size):
        mask = self.size - 1
        begin_index = rec.begin & mask
        if self._wraps(rec.begin) != self._wraps(rec.next - 1):
            # Wrapped: the id also goes where the block began, the block itself at index 0.
            self.data[begin_index:begin_index + 8] = struct.pack("<Q", rec.id)
            start = 0
        else:
            start = begin_index
        self.data[start:start + 8] = struct.pack("<Q", rec.id)
        self.data[start + 8:start + 8 + len(rec.text)] = rec.text

    def place(self, kernel, layout=None, where="direct"):
        """Write the ring into ``kernel``'s memory; sets the printk entries of its vmcoreinfo.

        ``where``: ``direct`` maps the arrays through the direct map with 1 GiB pages, ``vmalloc``
        through 4 KiB pages, ``huge`` through a 2 MiB page, ``image`` puts them in the kernel image.
        """
        lay = dict(LAYOUT_6_1, **(layout or {}))
        mem = kernel.mem
        desc_size, info_size = lay["SIZE(prb_desc)"], lay["SIZE(printk_info)"]
        total = self.count * desc_size + self.count * info_size + self.size
        if where == "image":
            base_v, base_p = kernel.image_var(total, 4096)
        else:
            npages = (total + 4095) // 4096
            if where == "huge":
                base_p = kernel.alloc.pages(512, align=2 << 20)
                base_v = kernel.VMALLOC + 0x200000
                kernel.pt.map(base_v, base_p, 2 << 20, 2 << 20)
            elif where == "vmalloc":
                # Scatter the pages in reverse so a reader assuming contiguity fails.
                pages = [kernel.alloc.pages() for dummy in range(npages)][::-1]
                base_v = kernel.VMALLOC + 0x10000
                for k, page in enumerate(pages):
                    kernel.pt.map_page(base_v + k * 4096, page)
                base_p = None
            else:
                base_p = kernel.alloc.pages(npages)
                base_v = kernel.direct_va(base_p)
        buf = bytearray(total)
        for index in range(self.count):
            rec = self.slots.get(index)
            if rec is None:
                continue
            d, i = index * desc_size, self.count * desc_size + index * info_size
            state_var = (rec.state << 62) | rec.id
            struct.pack_into("<Q", buf, d + lay["OFFSET(prb_desc.state_var)"] + lay["OFFSET(atomic_long_t.counter)"], state_var)
            lpos = d + lay["OFFSET(prb_desc.text_blk_lpos)"]
            struct.pack_into("<Q", buf, lpos + lay["OFFSET(prb_data_blk_lpos.begin)"], rec.begin)
            struct.pack_into("<Q", buf, lpos + lay["OFFSET(prb_data_blk_lpos.next)"], rec.next)
            struct.pack_into("<Q", buf, i + lay["OFFSET(printk_info.seq)"], rec.seq)
            struct.pack_into("<Q", buf, i + lay["OFFSET(printk_info.ts_nsec)"], rec.ts_nsec)
            struct.pack_into("<H", buf, i + lay["OFFSET(printk_info.text_len)"], len(rec.text))
            struct.pack_into("<I", buf, i + lay["OFFSET(printk_info.caller_id)"], rec.caller_id)
        buf[self.count * (desc_size + info_size):] = self.data
        if base_p is None:
            for k in range(0, total, 4096):
                mem.write(kernel.vtop(base_v + k), bytes(buf[k:k + 4096]))
        else:
            mem.write(base_p, bytes(buf))
        descs, infos, data = base_v, base_v + self.count * desc_size, base_v + self.count * (desc_size + info_size)
        # The ringbuffer struct itself lives in the image; prb points to it.
        rb_v, rb_p = kernel.image_var(128)
        prb_v, prb_p = kernel.image_var(8)
        mem.put(prb_p, "Q", rb_v)
        dr = rb_p + lay["OFFSET(printk_ringbuffer.desc_ring)"]
        mem.put(dr + lay["OFFSET(prb_desc_ring.count_bits)"], "I", self.count_bits)
        mem.put(dr + lay["OFFSET(prb_desc_ring.descs)"], "Q", descs)
        mem.put(dr + lay["OFFSET(prb_desc_ring.infos)"], "Q", infos)
        mem.put(dr + lay["OFFSET(prb_desc_ring.head_id)"] + lay["OFFSET(atomic_long_t.counter)"], "Q", self.head_id)
        mem.put(dr + lay["OFFSET(prb_desc_ring.tail_id)"] + lay["OFFSET(atomic_long_t.counter)"], "Q", self.tail_id)
        tr = rb_p + lay["OFFSET(printk_ringbuffer.text_data_ring)"]
        mem.put(tr + lay["OFFSET(prb_data_ring.size_bits)"], "I", self.size_bits)
        mem.put(tr + lay["OFFSET(prb_data_ring.data)"], "Q", data)
        mem.put(tr + lay["OFFSET(prb_data_ring.head_lpos)"], "Q", self.head_lpos)
        mem.put(tr + lay["OFFSET(prb_data_ring.tail_lpos)"], "Q", self.tail_lpos)
        kernel.info["SYMBOL(prb)"] = "%x" % prb_v
        for key, value in lay.items():
            kernel.info[key] = str(value)
        return {"descs": descs, "infos": infos, "data": data, "prb": prb_v}

    def expected(self):
        """(seq, ts_nsec, text) of the records a correct reader prints, oldest first."""
        out = []
        for step in range(((self.head_id - self.tail_id) & ID_MASK) + 1):
            rec = self.slots[((self.tail_id + step) & ID_MASK) & (self.count - 1)]
            if rec.state in (COMMITTED, FINALIZED) and (rec in self.live or (rec.begin, rec.next) == (NO_LPOS, NO_LPOS)):
                out.append((rec.seq, rec.ts_nsec, rec.text))
        return out


def _vtop(kernel, vaddr):
    """Walk the builder's own page tables (used only to scatter vmalloc pages)."""
    shifts = (48, 39, 30, 21, 12) if kernel.levels == 5 else (39, 30, 21, 12)
    table = kernel.pt.top
    for shift in shifts:
        entry = struct.unpack("<Q", kernel.mem.read(table + ((vaddr >> shift) & 511) * 8, 8))[0]
        addr = entry & 0x000ffffffffff000
        if shift == 12 or entry & 0x80:
            return (addr & ~((1 << shift) - 1)) | (vaddr & ((1 << shift) - 1))
        table = addr
    raise AssertionError("unreachable")


def note(name, ntype, desc):
    """One ELF note, 4-byte padded."""
    name_b = name.encode() + b"\0"
    return struct.pack("<III", len(name_b), len(desc), ntype) + _pad4(name_b) + _pad4(desc)


def _pad4(blob):
    return blob + bytes(-len(blob) % 4)


def core_bytes(segments, notes=b"", machine=62, elfclass=2, data=1, e_type=4, extra_memsz=0):
    """An ELF64 core: ``segments`` is [(paddr, bytes)], ``notes`` the PT_NOTE payload.

    ``extra_memsz`` adds that many zero bytes of p_memsz beyond p_filesz to the last segment.
    """
    phnum = len(segments) + 1
    offset = 64 + phnum * 56
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, offset, 0, 0, len(notes), len(notes), 4)]
    body = [notes]
    offset += len(notes)
    offset = (offset + 4095) & ~4095
    body.append(bytes(offset - 64 - phnum * 56 - len(notes)))
    for k, (paddr, blob) in enumerate(segments):
        memsz = len(blob) + (extra_memsz if k == len(segments) - 1 else 0)
        vaddr = 0xffff888000000000 + paddr
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 7, offset, vaddr, paddr, len(blob), memsz, 4096))
        body.append(blob)
        offset += len(blob)
    ident = b"\x7fELF" + bytes([elfclass, data, 1, 0]) + bytes(8)
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, e_type, machine, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    return ehdr + b"".join(phdrs) + b"".join(body)


def write_core(path, kernel, extra_notes=b"", **kwargs):
    """Write ``kernel`` as a core file at ``path`` (a CORE note first, like real dumps)."""
    notes = note("CORE", 1, bytes(336)) + extra_notes + note("VMCOREINFO", 0, kernel.vmcoreinfo())
    segments = [(start, bytes(buf)) for start, buf in kernel.mem.ranges]
    with open(path, "wb") as f:
        f.write(core_bytes(segments, notes, **kwargs))
    return path
