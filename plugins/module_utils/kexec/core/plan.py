# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Segment placement, the kernel's sanity checks, and a model of the relocation at jump time.

A kexec image is a list of segments: (buffer in our memory, destination in physical memory).
``Plan`` places each one as soon as it is added, in a RAM hole no earlier segment uses (inside the
crash region for crash kernels), as the kernel's own kexec_add_buffer() does for kexec_file_load;
``check()`` refuses anything the kernel's sanity_check_segment_list() would refuse, at the host's
page size, so a bad load fails here with a readable message instead of a bare EINVAL from the
syscall; ``relocation_model()`` replays what the kernel does with the pages at jump time
(core/relocation.py) so we can report and test it without root.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import mmap

from .digest import sha256_hex, update as update_digests
from ..errors import PlanError
from .memmap import PAGE_SIZE, MemoryMap, Range, align_up

#: kexec_load refuses more segments than this (include/uapi/linux/kexec.h).
KEXEC_SEGMENT_MAX = 16

KINDS = ("normal", "crash")
#: Crash loads leave the top of the crash region free: the kernel allocates its control page
#: (the relocation code it jumps through, kimage_alloc_crash_control_pages) inside the region,
#: wherever no segment lies.  At least this much, and at least one page of the host's size.
CRASH_CONTROL_HEADROOM = 0x10000

_ULONG_MAX = (1 << 64) - 1

# Chunk used to hash the zero tail of a segment without building memsz bytes of zeros.
_ZERO_CHUNK = bytes(1 << 16)


def _buffer_view(buf):
    """A flat byte memoryview over any buffer (bytes, bytearray, mmap, memoryview) without copying."""
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    return view


class Segment:
    """One kexec segment: ``bufsz`` bytes of ``buf`` copied to physical ``mem``, zero-filled to ``memsz``.

    ``buf`` may be bytes, bytearray, memoryview or an mmap; it is never copied.  A segment made
    by ``Plan.reserve()`` has no buffer until ``set_buffer()`` (purgatory is linked only once
    its own address is known).
    """

    def __init__(self, what, buf, mem, memsz):
        self.what = what
        self.mem = mem
        self.memsz = memsz
        self.buf = None
        self.bufsz = 0
        self._sha256 = None
        if buf is not None:
            self._attach(buf)

    def _attach(self, buf):
        view = _buffer_view(buf)
        self.buf = buf
        self.bufsz = view.nbytes
        self._sha256 = None

    def set_buffer(self, buf):
        """Give a reserved segment its contents; refuses a buffer larger than the reservation."""
        size = _buffer_view(buf).nbytes
        if size > self.memsz:
            raise PlanError(
                "segment %r: buffer of %#x bytes does not fit its reservation of %#x bytes at %#x; "
                "reserve more memory for it" % (self.what, size, self.memsz, self.mem)
            )
        self._attach(buf)

    @property
    def end(self):
        """First address after the segment's memory."""
        return self.mem + self.memsz

    @property
    def sha256(self):
        """Hex sha256 of the buffer's ``bufsz`` bytes (None without a buffer).

        Hashed through a memoryview, never copied.  Cached only for read-only buffers (bytes,
        read-only mmaps): images patch writable buffers (their boot data) after placement.
        """
        if self.buf is None:
            return None
        if self._sha256 is not None:
            return self._sha256
        digest = sha256_hex(self.buf)
        self.remember_sha256(digest)
        return digest

    def _immutable(self):
        """Read-only buffers and file mappings never change under us (the loader writes into
        neither); writable ones (boot data) are patched after placement."""
        view = _buffer_view(self.buf)
        return view.readonly or isinstance(view.obj, mmap.mmap)

    def remember_sha256(self, hexdigest):
        """Keep a digest of exactly this buffer's bytes computed elsewhere (purgatory hashes
        every segment anyway), so that a 64 MiB initrd is read once, not twice."""
        if self.buf is not None and self._immutable():
            self._sha256 = hexdigest

    def sha256_memsz(self):
        """Hex sha256 of the whole destination as it will be after the load: buffer + zero fill.

        This is what kexec-tools' purgatory verifies (regions are ``memsz`` long).
        """
        h = hashlib.sha256()
        if self.buf is not None:
            update_digests((h,), self.buf)
        left = self.memsz - self.bufsz
        while left > 0:
            n = min(left, len(_ZERO_CHUNK))
            h.update(_ZERO_CHUNK[:n] if n < len(_ZERO_CHUNK) else _ZERO_CHUNK)
            left -= n
        return h.hexdigest()

    def to_dict(self):
        """Plain-value form: {"what", "mem", "memsz", "bufsz", "sha256"}."""
        return {"what": self.what, "mem": self.mem, "memsz": self.memsz, "bufsz": self.bufsz, "sha256": self.sha256}

    def __repr__(self):
        return "Segment(%r, mem=%#x, memsz=%#x, bufsz=%#x)" % (self.what, self.mem, self.memsz, self.bufsz)


def _hex(n):
    return "%#x" % n


class Plan:
    """Where every segment goes, and the entry point, for one kexec load.

    ``memory_map`` is a MemoryMap (or a list of Ranges); ``kind`` is "normal" or "crash";
    ``crash_region`` (Range or (start, end), half-open) is required for crash loads;
    ``page_size`` is the running kernel's (the unit of every alignment rule and of the half-of-RAM
    rule); ``totalram_pages`` is the kernel's count of managed pages (MemTotal / page size),
    estimated from the memory map when not given; ``destination_limit`` is the architecture's
    KEXEC_DESTINATION_MEMORY_LIMIT (the arch package knows it; the core does not), ``arch`` only
    names the architecture in messages.
    """

    def __init__(self, memory_map, kind="normal", crash_region=None, arch="", method="classic", totalram_pages=None,
                 page_size=PAGE_SIZE, destination_limit=None):
        if kind not in KINDS:
            raise PlanError("unknown load kind %r: use one of %s" % (kind, ", ".join(KINDS)))
        if not isinstance(memory_map, MemoryMap):
            memory_map = MemoryMap(memory_map)
        if crash_region is not None and not isinstance(crash_region, Range):
            crash_region = Range(crash_region[0], crash_region[1], "Crash kernel")
        if kind == "crash" and (crash_region is None or crash_region.size == 0):
            raise PlanError(
                "a crash kernel needs reserved memory but this host has no crash region; "
                "boot it with crashkernel=256M (or more) on the kernel command line"
            )
        self.memory_map = memory_map
        self.kind = kind
        self.crash_region = crash_region
        self.arch = arch
        self.method = method
        self.totalram_pages = totalram_pages
        if page_size < PAGE_SIZE or page_size & (page_size - 1):
            raise PlanError("page size %#x is not a power of two of at least 4 KiB; the host's page size is misread"
                            % page_size)
        self.page_size = page_size
        self._destination_limit = _ULONG_MAX if destination_limit is None else destination_limit
        self.entry = None
        self.segments = []

    # -- placement ---------------------------------------------------------------------------

    @property
    def destination_limit(self):
        """Highest byte address a destination may reach on this arch."""
        return self._destination_limit

    @property
    def control_headroom(self):
        """Bytes kept free at the top of a crash region for the kernel's control page."""
        return max(CRASH_CONTROL_HEADROOM, self.page_size)

    def _window(self, min_addr, max_addr):
        # The kernel refuses a segment whose end reaches the limit, so the last byte stays 2 below.
        top = self.destination_limit - 1
        if max_addr is None or max_addr > top:
            max_addr = top
        if self.kind == "crash":
            min_addr = max(min_addr, self.crash_region.start)
            max_addr = min(max_addr, self.crash_region.end - self.control_headroom - 1)
        return min_addr, max_addr

    def _place(self, what, memsz, align, min_addr, max_addr, top_down):
        memsz = align_up(memsz, self.page_size)
        align = max(align, self.page_size)
        lo, hi = self._window(min_addr, max_addr)
        if hi < lo:
            raise PlanError(
                "segment %r: window %#x-%#x lies outside the %s; widen the window"
                % (what, min_addr, max_addr if max_addr is not None else 0, "crash region" if self.kind == "crash" else "addressable memory")
            )
        try:
            return self.memory_map.find_hole(memsz, align, lo, hi, top_down, avoid=[(s.mem, s.end) for s in self.segments]), memsz
        except PlanError as exc:
            where = " inside the crash region %#x-%#x" % (self.crash_region.start, self.crash_region.end) if self.kind == "crash" else ""
            hint = "; boot with a larger crashkernel= reservation" if self.kind == "crash" else ""
            raise PlanError("segment %r (%#x bytes) does not fit%s: %s%s" % (what, memsz, where, exc, hint))

    def add_segment(self, what, buf, memsz=None, align=PAGE_SIZE, min_addr=0, max_addr=None, top_down=False,
                    offset=0):
        """Place ``buf`` now in a free RAM hole and return its Segment (kexec-tools add_buffer).

        ``memsz`` defaults to the buffer's size and is rounded up to the host's page; ``align`` is
        at least a page; ``max_addr`` is the highest address the last byte may take (inclusive).
        ``offset`` (a page multiple) starts the segment that many bytes above an ``align``-aligned
        base, for boot protocols that load an image at a fixed offset from an aligned base; the
        bytes between base and segment are free RAM too, but not part of the segment.
        """
        bufsz = _buffer_view(buf).nbytes
        if memsz is None:
            memsz = bufsz
        if bufsz > memsz:
            raise PlanError("segment %r: buffer of %#x bytes is larger than its memsz %#x; pass memsz >= the buffer size" % (what, bufsz, memsz))
        if memsz == 0:
            raise PlanError("segment %r is empty; an empty file was probably given" % (what,))
        if offset % self.page_size:
            raise PlanError("segment %r: offset %#x from its base is not a multiple of the page size %#x"
                            % (what, offset, self.page_size))
        base, size = self._place(what, memsz + offset, align, min_addr, max_addr, top_down)
        mem, memsz = base + offset, size - offset
        seg = Segment(what, buf, mem, memsz)
        self.segments.append(seg)
        return seg

    def add_segment_at(self, what, buf, mem, memsz=None):
        """Add a segment at a fixed address (ELF program headers say where); ``check()`` judges it."""
        bufsz = _buffer_view(buf).nbytes if buf is not None else 0
        if memsz is None:
            memsz = bufsz
        seg = Segment(what, buf, mem, memsz)
        self.segments.append(seg)
        return seg

    def reserve(self, what, memsz, align=PAGE_SIZE, min_addr=0, max_addr=None, top_down=False):
        """Place an empty segment of ``memsz`` now; fill it later with ``Segment.set_buffer()``."""
        if memsz <= 0:
            raise PlanError("cannot reserve %#x bytes for %r: the size must be positive" % (memsz, what))
        mem, memsz = self._place(what, memsz, align, min_addr, max_addr, top_down)
        seg = Segment(what, None, mem, memsz)
        self.segments.append(seg)
        return seg

    def segment(self, what):
        """The first segment named ``what`` (None when absent)."""
        for seg in self.segments:
            if seg.what == what:
                return seg
        return None

    # -- checks ------------------------------------------------------------------------------

    def _totalram_pages(self):
        if self.totalram_pages is not None:
            return self.totalram_pages
        return self.memory_map.total_ram() // self.page_size

    def problems(self):
        """Every reason the kernel (or our own loader) would refuse this plan, as strings."""
        out = []
        segs = self.segments
        if len(segs) > KEXEC_SEGMENT_MAX:
            out.append("%d segments, the kernel takes at most %d (KEXEC_SEGMENT_MAX); merge segments" % (len(segs), KEXEC_SEGMENT_MAX))
        limit = self.destination_limit
        for seg in segs:
            name = "segment %r at %#x+%#x" % (seg.what, seg.mem, seg.memsz)
            mend = seg.mem + seg.memsz
            if seg.mem < 0 or seg.memsz < 0 or mend > _ULONG_MAX:
                out.append("%s wraps around the address space; give it a sane address and size" % name)
                continue
            if seg.mem % self.page_size or mend % self.page_size:
                out.append("%s is not page aligned (start and end must be multiples of %#x, the host's page size); "
                           "round it to pages" % (name, self.page_size))
            if mend >= limit:
                out.append("%s ends at %#x, at or above the %sdestination limit %#x; place it lower"
                           % (name, mend, self.arch + " " if self.arch else "", limit))
            if seg.buf is None:
                out.append("%s was reserved but never given a buffer; link or fill it before loading" % name)
            if seg.bufsz > seg.memsz:
                out.append("%s holds %#x bytes, more than its memsz; raise memsz to at least the buffer size" % (name, seg.bufsz))
            if self.kind == "crash":
                cr = self.crash_region
                if seg.mem < cr.start or mend > cr.end:
                    out.append("%s lies outside the crash region %#x-%#x; place it inside the reservation" % (name, cr.start, cr.end))
                elif mend > cr.end - self.control_headroom:
                    out.append("%s reaches into the top %#x bytes of the crash region, kept free for the kernel's "
                               "control page; place it lower" % (name, self.control_headroom))
            elif not self.memory_map.contains_ram(seg.mem, mend):
                out.append("%s is not entirely in System RAM; place it in a RAM hole" % name)
        # Overlaps: sort once and sweep, remembering the segment reaching furthest so far.
        ordered = sorted(segs, key=lambda s: (s.mem, s.memsz))
        reach = None
        for seg in ordered:
            if seg.memsz <= 0:
                continue
            if reach is not None and seg.mem < reach.mem + reach.memsz:
                out.append("segments %r (%#x-%#x) and %r (%#x-%#x) overlap; move one of them"
                           % (reach.what, reach.mem, reach.mem + reach.memsz, seg.what, seg.mem, seg.mem + seg.memsz))
            if reach is None or seg.mem + seg.memsz > reach.mem + reach.memsz:
                reach = seg
        # The kernel refuses loads needing more than half of RAM (slow page allocation soft-locks).
        half = self._totalram_pages() // 2
        total = 0
        for seg in segs:
            pages = max(0, -(-seg.memsz // self.page_size))
            total += pages
            if pages > half:
                out.append("segment %r needs %#x pages, more than half of RAM (%#x pages); use a smaller image or initrd" % (seg.what, pages, half))
        if total > half:
            out.append("the segments need %#x pages in all, more than half of RAM (%#x pages); use a smaller kernel or initrd" % (total, half))
        return out

    def check(self):
        """Raise PlanError listing every problem the kernel's sanity_check_segment_list would refuse.

        Run before any syscall so a refused load leaves the host untouched and the user reads
        all the reasons at once, with numbers.
        """
        problems = self.problems()
        if problems:
            raise PlanError("the %s kexec plan would be refused by the kernel:\n- %s" % (self.kind, "\n- ".join(problems)))
        return self

    # -- relocation model --------------------------------------------------------------------

    def relocation_model(self, allocator="top_down"):
        """What the kernel does with this plan's pages between load and jump (core/relocation.py)."""
        from .relocation import relocation_model  # pylint: disable=import-outside-toplevel
        return relocation_model(self, allocator)

    # -- plain values ------------------------------------------------------------------------

    def to_dict(self):
        """Plain-value form: {"method", "kind", "entry", "segments": [Segment.to_dict()...]}."""
        return {
            "method": self.method,
            "kind": self.kind,
            "entry": self.entry,
            "segments": [s.to_dict() for s in self.segments],
        }

    def __repr__(self):
        return "Plan(kind=%r, entry=%s, segments=%r)" % (self.kind, _hex(self.entry) if self.entry is not None else None, self.segments)
