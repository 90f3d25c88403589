# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The crashed kernel's log, read from a vmcore through its VMCOREINFO note: the lockless printk
ringbuffer (Linux 5.10+, kernel/printk/printk_ringbuffer.c) or the older log_buf records.

Reading needs no debug symbols: only the note, a virtual-to-physical translation (the
architecture's, handed in as ``mem``) and the ringbuffer layout the note itself describes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from .vmcore import ElfCore, VmcoreError

_M64 = (1 << 64) - 1
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_MAX_RING_BYTES = 1 << 31    # the kernel caps log_buf_len well below this

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


def kernel_log(path, memory_for):
    """Read the kernel log of the crash dump at ``path``: read_kernel_log's dict plus ``path``,
    ``osrelease`` and ``dmesg`` (the formatted text).  ``memory_for(core, info)`` gives the
    architecture's kernel-memory reader (arch.vmcore_memory picks it by the core's machine)."""
    with ElfCore(path) as core:
        info = core.vmcoreinfo()
        result = read_kernel_log(memory_for(core, info), info)
    result["path"] = path
    result["osrelease"] = info.entries.get("OSRELEASE")
    result["dmesg"] = format_dmesg(result["records"])
    return result
