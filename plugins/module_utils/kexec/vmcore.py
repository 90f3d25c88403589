"""Read a crashed kernel's memory from an ELF64 core (``/proc/vmcore``) and its kernel log.

The capture kernel exposes the crashed kernel's RAM as an ELF core: PT_LOAD segments map physical
addresses to file offsets, and a PT_NOTE carries the VMCOREINFO note, ``KEY=VALUE`` lines in which
the crashed kernel published the addresses, offsets and sizes a reader needs (``SYMBOL(prb)``,
``OFFSET(prb_desc.state_var)``...).  Reading the log therefore needs no debug symbols: only the
note, a virtual-to-physical translation (the kernel image mapping or a page-table walk) and the
printk ringbuffer layout, described by the note itself.

Only x86_64 little-endian ELF64 cores are read; anything else is refused with a ``VmcoreError``.
Every malformed input (truncated file, absurd sizes, unmapped address, inconsistent ringbuffer)
raises ``VmcoreError`` too: callers never see ``struct.error`` or ``IndexError``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import os
import struct

from .errors import ImageFormatError, KexecError
from . import elf as _elf


class VmcoreError(KexecError):
    """The crash dump cannot be read: wrong format, truncated, or lacking what the reader needs."""


START_KERNEL_MAP = 0xffffffff80000000
DEFAULT_KERNEL_IMAGE_SIZE = 1 << 30  # the x86_64 value with KASLR; the note says when it differs
PAGE_SIZE = 4096
_M64 = (1 << 64) - 1
_PTE_PRESENT = 0x1
_PTE_LARGE = 0x80
_PTE_ADDR = 0x000ffffffffff000
_EM_X86_64 = 62
_ET_CORE = 4
_PT_LOAD = 1
_PT_NOTE = 4
_MAX_NOTE_BYTES = 16 << 20   # real note segments are a few KiB per CPU; more means corruption
_MAX_RING_BYTES = 1 << 31    # the kernel caps log_buf_len well below this

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")

# printk ringbuffer (Linux 5.10+): the top two bits of a descriptor's state_var hold its state,
# the rest its id.  Records in the committed or finalized state are complete and readable.
_DESC_FLAGS_SHIFT = 62
_DESC_ID_MASK = (1 << _DESC_FLAGS_SHIFT) - 1
_DESC_RESERVED, _DESC_COMMITTED, _DESC_FINALIZED, _DESC_REUSABLE = 0, 1, 2, 3
_NO_LPOS = 0x3  # a data-less record with empty text (as opposed to a failed allocation, 0x1)

LOCKLESS_KEYS = (
    "SYMBOL(prb)",
    "OFFSET(printk_ringbuffer.desc_ring)", "OFFSET(printk_ringbuffer.text_data_ring)",
    "OFFSET(prb_desc_ring.count_bits)", "OFFSET(prb_desc_ring.descs)", "OFFSET(prb_desc_ring.infos)",
    "OFFSET(prb_desc_ring.head_id)", "OFFSET(prb_desc_ring.tail_id)",
    "SIZE(prb_desc)", "OFFSET(prb_desc.state_var)", "OFFSET(prb_desc.text_blk_lpos)",
    "OFFSET(prb_data_blk_lpos.begin)", "OFFSET(prb_data_blk_lpos.next)",
    "SIZE(printk_info)", "OFFSET(printk_info.seq)", "OFFSET(printk_info.ts_nsec)",
    "OFFSET(printk_info.text_len)", "OFFSET(printk_info.caller_id)",
    "OFFSET(prb_data_ring.size_bits)", "OFFSET(prb_data_ring.data)",
    "OFFSET(atomic_long_t.counter)",
)
LEGACY_KEYS = (
    "SYMBOL(log_buf)", "SYMBOL(log_buf_len)", "SYMBOL(log_first_idx)", "SYMBOL(log_next_idx)",
    "SIZE(printk_log)", "OFFSET(printk_log.ts_nsec)", "OFFSET(printk_log.len)",
    "OFFSET(printk_log.text_len)",
)


def parse_vmcoreinfo(text):
    """``KEY=VALUE`` lines (str or bytes) -> dict of str; lines without ``=`` are ignored."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    entries = {}
    for line in text.split("\0", 1)[0].splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            entries[key.strip()] = value.strip()
    return entries


class VmcoreInfo:
    """Typed access to VMCOREINFO entries; a missing or malformed key raises VmcoreError."""

    def __init__(self, entries):
        self.entries = dict(entries)

    def has(self, key):
        """True when the note has ``key`` (e.g. ``"SYMBOL(prb)"``)."""
        return key in self.entries

    def missing(self, keys):
        """The keys of ``keys`` the note lacks, in order."""
        return [k for k in keys if k not in self.entries]

    def require(self, keys, what):
        """Raise one VmcoreError naming every key of ``keys`` the note lacks (needed for ``what``)."""
        absent = self.missing(keys)
        if absent:
            raise VmcoreError("cannot read %s: the crashed kernel's VMCOREINFO lacks %s"
                              % (what, ", ".join(absent)))

    def _value(self, key, base):
        if key not in self.entries:
            raise VmcoreError("the crashed kernel's VMCOREINFO lacks %s" % key)
        try:
            return int(self.entries[key], base)
        except ValueError:
            raise VmcoreError("VMCOREINFO %s=%r is not a number" % (key, self.entries[key]))

    def symbol(self, name):
        """Address of a kernel symbol (hexadecimal in the note)."""
        return self._value("SYMBOL(%s)" % name, 16)

    def offset(self, struct_name, member):
        """Byte offset of ``member`` in ``struct_name``."""
        return self._value("OFFSET(%s.%s)" % (struct_name, member), 10)

    def size(self, name):
        """sizeof a kernel type."""
        return self._value("SIZE(%s)" % name, 10)

    def number(self, name, default=None):
        """A NUMBER(name) entry (signed decimal); ``default`` when absent and a default is given."""
        key = "NUMBER(%s)" % name
        if default is not None and key not in self.entries:
            return default
        return self._value(key, 10)

    def length(self, name):
        """A LENGTH(name) entry (element count of an array)."""
        return self._value("LENGTH(%s)" % name, 10)

    def kernel_offset(self):
        """The KASLR slide of the kernel image (KERNELOFFSET, hexadecimal), 0 when absent."""
        return self._value("KERNELOFFSET", 16) if "KERNELOFFSET" in self.entries else 0


class ElfCore:
    """An x86_64 ELF64 core file: physical memory by PT_LOAD, notes by PT_NOTE.

    Reads with ``os.pread``: the file is usually /proc/vmcore (gigabytes), never loaded whole.
    ``touched`` collects the physical page numbers read, to cut small regression fixtures.
    """

    def __init__(self, path):
        self.path = path
        self.touched = set()
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            raise VmcoreError("cannot open %s: %s" % (path, err.strerror or err))
        try:
            self.size = os.fstat(self._fd).st_size
            self._parse()
        except BaseException:
            os.close(self._fd)
            raise

    def close(self):
        """Close the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _pread(self, offset, size, what):
        parts = []
        got = 0
        while got < size:
            try:
                chunk = os.pread(self._fd, size - got, offset + got)
            except OSError as err:
                raise VmcoreError("%s: reading %s at offset %#x failed: %s" % (self.path, what, offset, err.strerror))
            if not chunk:
                raise VmcoreError("%s is truncated: %s at offset %#x needs %d bytes, the file ends after %d"
                                  % (self.path, what, offset, size, got))
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _parse(self):
        ident = self._pread(0, 16, "the ELF identification") if self.size >= 16 else b""
        if ident[:4] != b"\x7fELF":
            raise VmcoreError("%s is not an ELF core file (no \\x7fELF magic)" % self.path)
        if ident[4] != 2 or ident[5] != 1:
            raise VmcoreError("%s is a %s %s-endian ELF file; only ELF64 little-endian (x86_64) cores are read"
                              % (self.path, "64-bit" if ident[4] == 2 else "32-bit", "little" if ident[5] == 1 else "big"))
        (_ident, e_type, e_machine, _ver, _entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize, e_phnum,
         _shentsize, _shnum, _shstrndx) = _EHDR.unpack(self._pread(0, _EHDR.size, "the ELF header"))
        if e_type != _ET_CORE:
            raise VmcoreError("%s is an ELF file of type %d, not a core file (type 4)" % (self.path, e_type))
        if e_machine != _EM_X86_64:
            raise VmcoreError("%s is a core of machine %d; only x86_64 (62) is read" % (self.path, e_machine))
        if e_phentsize != _PHDR.size or e_phnum == 0 or e_phnum == 0xffff:
            raise VmcoreError("%s has an unusable program header table (entry size %d, count %d)"
                              % (self.path, e_phentsize, e_phnum))
        table = self._pread(e_phoff, e_phnum * _PHDR.size, "the program headers")
        loads = []
        self.notes = []
        for i in range(e_phnum):
            p_type, _pflags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _align = _PHDR.unpack_from(table, i * _PHDR.size)
            if p_type == _PT_LOAD:
                if p_offset + p_filesz > self.size:
                    raise VmcoreError("%s is truncated: PT_LOAD %d (physical %#x) ends at offset %#x, the file has %d bytes"
                                      % (self.path, i, p_paddr, p_offset + p_filesz, self.size))
                if p_memsz and p_paddr != _M64:
                    loads.append((p_paddr, p_offset, p_filesz, max(p_memsz, p_filesz), p_vaddr))
            elif p_type == _PT_NOTE:
                if p_filesz > _MAX_NOTE_BYTES:
                    raise VmcoreError("%s: PT_NOTE %d claims %d bytes; the file is corrupt" % (self.path, i, p_filesz))
                data = self._pread(p_offset, p_filesz, "PT_NOTE %d" % i)
                try:
                    self.notes.extend(_elf.iter_notes(data, True))
                except ImageFormatError as err:
                    raise VmcoreError("%s: PT_NOTE %d is corrupt: %s" % (self.path, i, err))
        loads.sort()
        self.loads = loads
        self._starts = [seg[0] for seg in loads]

    def vmcoreinfo(self):
        """The VMCOREINFO note as a VmcoreInfo (VmcoreError when the core has none)."""
        for name, _ntype, desc in self.notes:
            if name == "VMCOREINFO":
                return VmcoreInfo(parse_vmcoreinfo(desc))
        raise VmcoreError("%s has no VMCOREINFO note: the crashed kernel did not publish where its data is" % self.path)

    def read_phys(self, paddr, size):
        """``size`` bytes of the crashed kernel's physical memory at ``paddr``."""
        parts = []
        while size > 0:
            i = bisect.bisect_right(self._starts, paddr) - 1
            seg = self.loads[i] if i >= 0 else None
            if seg is None or paddr >= seg[0] + seg[3]:
                raise VmcoreError("physical address %#x is not in the dump %s" % (paddr, self.path))
            start, offset, filesz, memsz = seg[:4]
            within = paddr - start
            take = min(size, memsz - within)
            from_file = max(0, min(take, filesz - within))
            if from_file:
                parts.append(self._pread(offset + within, from_file, "physical memory %#x" % paddr))
            if take > from_file:
                parts.append(bytes(take - from_file))  # memsz beyond filesz reads as zeros, like ELF says
            for page in range(paddr >> 12, (paddr + take - 1 >> 12) + 1):
                self.touched.add(page)
            paddr += take
            size -= take
        return b"".join(parts)


class X86_64Memory:
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

    def read(self, vaddr, size):
        """``size`` bytes at kernel virtual address ``vaddr`` (page by page: mappings need not be contiguous)."""
        parts = []
        while size > 0:
            take = min(size, PAGE_SIZE - (vaddr & 0xfff))
            parts.append(self.core.read_phys(self.vtop(vaddr), take))
            vaddr += take
            size -= take
        return b"".join(parts)

    def u64(self, vaddr):
        """An unsigned 64-bit value (a pointer or an unsigned long) at ``vaddr``."""
        return _U64.unpack(self.read(vaddr, 8))[0]

    def u32(self, vaddr):
        """An unsigned 32-bit value at ``vaddr``."""
        return _U32.unpack(self.read(vaddr, 4))[0]


def _caller(caller_id):
    # printk's caller id: the top bit marks a CPU number (printed in interrupt context), else a PID.
    return ("C%d" % (caller_id & 0x7fffffff)) if caller_id & 0x80000000 else ("T%d" % caller_id)


def _record(seq, ts_nsec, text, caller_id=None):
    rec = {"seq": seq, "ts_nsec": ts_nsec, "text": text.decode("utf-8", "backslashreplace")}
    if caller_id is not None:
        rec["caller"] = _caller(caller_id)
    return rec


def _block_text(data, size_bits, begin, nxt, text_len, desc_id):
    """The text of one data block, or None when the block description is not valid."""
    ring = 1 << size_bits
    if begin & 1 and nxt & 1:  # data-less record: empty text, or a failed allocation
        return b"" if begin == _NO_LPOS and nxt == _NO_LPOS else None
    if begin & 7 or nxt & 7:
        return None

    def wraps(lpos):
        return (lpos & _M64) >> size_bits

    # A block lies in one wrap of the ring, or, when it did not fit before the end, starts the
    # next wrap at index 0.  Newer kernels let a block end exactly at the ring's end (next is
    # then the next wrap's start), hence the ``nxt - 1``.  Positions are unsigned longs that
    # start just below 2**64, so all arithmetic is modulo 2**64.
    length = (nxt - begin) & _M64
    if 0 < length <= ring and wraps(begin) == wraps(nxt - 1):
        start, size = begin & (ring - 1), length
    elif wraps(begin + ring) == wraps(nxt):
        start, size = 0, nxt & (ring - 1)
    else:
        return None
    if size < 8 or start + size > ring:
        return None
    if _U64.unpack_from(data, start)[0] != desc_id:  # the block was reused by a later record
        return None
    if size - 8 < text_len:
        return None
    return bytes(data[start + 8:start + 8 + text_len])


def read_lockless_log(mem, info):
    """Records of the Linux 5.10+ lockless printk ringbuffer, oldest first.

    Returns ``{"format": "lockless", "records": [...], "skipped": {...}}``: each record
    ``{"seq", "ts_nsec", "caller", "text"}``; ``skipped`` counts descriptors not printed because
    they were overwritten (``missing``), still being written (``reserved``), already recycled
    (``reusable``) or inconsistent with their data block (``invalid``).
    """
    info.require(LOCKLESS_KEYS, "the kernel log (lockless printk ringbuffer)")
    counter = info.offset("atomic_long_t", "counter")
    prb = mem.u64(info.symbol("prb"))  # prb is a pointer: static ring at boot, a larger one later
    desc_ring = prb + info.offset("printk_ringbuffer", "desc_ring")
    data_ring = prb + info.offset("printk_ringbuffer", "text_data_ring")
    count_bits = mem.u32(desc_ring + info.offset("prb_desc_ring", "count_bits"))
    descs = mem.u64(desc_ring + info.offset("prb_desc_ring", "descs"))
    infos = mem.u64(desc_ring + info.offset("prb_desc_ring", "infos"))
    head_id = mem.u64(desc_ring + info.offset("prb_desc_ring", "head_id") + counter) & _DESC_ID_MASK
    tail_id = mem.u64(desc_ring + info.offset("prb_desc_ring", "tail_id") + counter) & _DESC_ID_MASK
    size_bits = mem.u32(data_ring + info.offset("prb_data_ring", "size_bits"))
    data_addr = mem.u64(data_ring + info.offset("prb_data_ring", "data"))
    desc_size, info_size = info.size("prb_desc"), info.size("printk_info")
    count = 1 << min(count_bits, 63)
    if not 1 <= count_bits <= 28 or not 3 <= size_bits <= 31 or count * (desc_size + info_size) > _MAX_RING_BYTES:
        raise VmcoreError("the printk ringbuffer looks corrupt (count_bits %d, size_bits %d)" % (count_bits, size_bits))
    span = (head_id - tail_id) & _DESC_ID_MASK
    if span >= count:
        raise VmcoreError("the printk ringbuffer looks corrupt (tail id %#x, head id %#x, %d descriptors)"
                          % (tail_id, head_id, count))
    desc_buf = mem.read(descs, count * desc_size)
    info_buf = mem.read(infos, count * info_size)
    data = mem.read(data_addr, 1 << size_bits)
    o_state = info.offset("prb_desc", "state_var") + counter
    o_lpos = info.offset("prb_desc", "text_blk_lpos")
    o_begin, o_next = o_lpos + info.offset("prb_data_blk_lpos", "begin"), o_lpos + info.offset("prb_data_blk_lpos", "next")
    o_seq, o_ts = info.offset("printk_info", "seq"), info.offset("printk_info", "ts_nsec")
    o_len, o_caller = info.offset("printk_info", "text_len"), info.offset("printk_info", "caller_id")
    if max(o_state, o_begin, o_next) + 8 > desc_size or max(o_seq, o_ts) + 8 > info_size or max(o_len + 2, o_caller + 4) > info_size:
        raise VmcoreError("VMCOREINFO offsets do not fit SIZE(prb_desc)=%d / SIZE(printk_info)=%d" % (desc_size, info_size))
    skipped = {"missing": 0, "reserved": 0, "reusable": 0, "invalid": 0}
    records = []
    for step in range(span + 1):
        desc_id = (tail_id + step) & _DESC_ID_MASK
        index = desc_id & (count - 1)
        d, i = index * desc_size, index * info_size
        state_var = _U64.unpack_from(desc_buf, d + o_state)[0]
        if state_var & _DESC_ID_MASK != desc_id:
            skipped["missing"] += 1
            continue
        state = state_var >> _DESC_FLAGS_SHIFT
        if state not in (_DESC_COMMITTED, _DESC_FINALIZED):
            skipped["reserved" if state == _DESC_RESERVED else "reusable"] += 1
            continue
        text = _block_text(data, size_bits, _U64.unpack_from(desc_buf, d + o_begin)[0],
                           _U64.unpack_from(desc_buf, d + o_next)[0], _U16.unpack_from(info_buf, i + o_len)[0], desc_id)
        if text is None:
            skipped["invalid"] += 1
            continue
        records.append(_record(_U64.unpack_from(info_buf, i + o_seq)[0], _U64.unpack_from(info_buf, i + o_ts)[0], text,
                               _U32.unpack_from(info_buf, i + o_caller)[0]))
    return {"format": "lockless", "records": records, "skipped": skipped}


def read_legacy_log(mem, info):
    """Records of the pre-5.10 printk buffer (``log_buf`` of ``struct printk_log`` entries), oldest first."""
    info.require(LEGACY_KEYS, "the kernel log (pre-5.10 log_buf)")
    buf_addr = mem.u64(info.symbol("log_buf"))
    buf_len = mem.u32(info.symbol("log_buf_len"))
    first, last = mem.u32(info.symbol("log_first_idx")), mem.u32(info.symbol("log_next_idx"))
    hdr_size = info.size("printk_log")
    o_ts, o_len, o_text = (info.offset("printk_log", m) for m in ("ts_nsec", "len", "text_len"))
    o_caller = info.offset("printk_log", "caller_id") if info.has("OFFSET(printk_log.caller_id)") else None
    if not 0 < buf_len <= _MAX_RING_BYTES or first >= buf_len or last >= buf_len or max(o_ts + 8, o_len + 2, o_text + 2) > hdr_size:
        raise VmcoreError("the pre-5.10 log buffer looks corrupt (log_buf_len %d, first %d, next %d)" % (buf_len, first, last))
    buf = mem.read(buf_addr, buf_len)
    records, index, seq, wrapped = [], first, 0, False
    while index != last:
        if index + hdr_size > buf_len:
            raise VmcoreError("the pre-5.10 log buffer looks corrupt (record header at %d of %d)" % (index, buf_len))
        length = _U16.unpack_from(buf, index + o_len)[0]
        if length == 0:  # the writer could not fit the next record before the end: it starts at 0
            if wrapped:
                raise VmcoreError("the pre-5.10 log buffer looks corrupt (wrapped twice)")
            index, wrapped = 0, True
            continue
        text_len = _U16.unpack_from(buf, index + o_text)[0]
        if length < hdr_size or index + length > buf_len or hdr_size + text_len > length:
            raise VmcoreError("the pre-5.10 log buffer looks corrupt (record at %d, len %d)" % (index, length))
        caller = _U32.unpack_from(buf, index + o_caller)[0] if o_caller is not None else None
        records.append(_record(seq, _U64.unpack_from(buf, index + o_ts)[0], buf[index + hdr_size:index + hdr_size + text_len], caller))
        seq += 1
        index += length
        if wrapped and index > last:
            raise VmcoreError("the pre-5.10 log buffer looks corrupt (ran past log_next_idx)")
    return {"format": "legacy", "records": records, "skipped": {}}


def read_kernel_log(mem, info):
    """The crashed kernel's log, whichever printk format it used (see read_lockless_log)."""
    if info.has("SYMBOL(prb)"):
        return read_lockless_log(mem, info)
    if info.has("SYMBOL(log_buf)"):
        return read_legacy_log(mem, info)
    raise VmcoreError("cannot find the kernel log: the crashed kernel's VMCOREINFO has neither SYMBOL(prb) "
                      "(Linux 5.10+) nor SYMBOL(log_buf) (older kernels)")


def _printable(text):
    # Like vmcore-dmesg, never let control characters from the log reach a terminal; UTF-8 stays.
    out = []
    for ch in text:
        if (ord(ch) < 0x20 and ch not in "\n\t") or ord(ch) == 0x7f:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def format_dmesg(records):
    """The records as dmesg prints them: ``[%5lu.%06lu] text`` lines, ending in a newline."""
    lines = []
    for rec in records:
        seconds, nsec = divmod(rec["ts_nsec"], 1000000000)
        lines.append("[%5d.%06d] %s\n" % (seconds, nsec // 1000, _printable(rec["text"])))
    return "".join(lines)


def kernel_log(path="/proc/vmcore"):
    """Read the kernel log of the crash dump at ``path``: read_kernel_log's dict plus ``path``,
    ``osrelease`` and ``dmesg`` (the formatted text)."""
    with ElfCore(path) as core:
        info = core.vmcoreinfo()
        result = read_kernel_log(X86_64Memory(core, info), info)
    result["path"] = path
    result["osrelease"] = info.entries.get("OSRELEASE")
    result["dmesg"] = format_dmesg(result["records"])
    return result
