# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Physical memory ranges and hole finding.

The planner must put every kexec segment in RAM the *next* kernel may use, the way kexec-tools'
locate_hole() and the kernel's kexec_file loader (locate_mem_hole) do: walk the RAM ranges
top-down or bottom-up, keep to a window [min_addr, max_addr], honour alignment and skip what is
already taken.  Everything here is a plain value so plans can be printed, compared and tested
without root.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import HostError, PlanError

PAGE_SIZE = 4096

#: The type string Linux uses for usable memory in both /sys/firmware/memmap and /proc/iomem.
RAM = "System RAM"


def align_up(value, align):
    """Smallest multiple of ``align`` that is >= ``value`` (align need not be a power of two)."""
    return -(-value // align) * align


def align_down(value, align):
    """Largest multiple of ``align`` that is <= ``value``."""
    return (value // align) * align


class Range:
    """A half-open physical address range [start, end) with a type string.

    Half-open because sizes then are plain ``end - start`` and adjacent ranges share a bound;
    sysfs and iomem print inclusive ends, their readers add one.
    """

    __slots__ = ("start", "end", "type")

    def __init__(self, start, end, type=RAM):  # pylint: disable=redefined-builtin  # "type" is the sysfs field name
        if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool):
            raise TypeError("Range bounds must be integers, got %r, %r" % (start, end))
        if start < 0 or end < start:
            raise ValueError("invalid range [%#x, %#x)" % (start, end))
        self.start = start
        self.end = end
        self.type = type

    @property
    def size(self):
        """Number of bytes in the range."""
        return self.end - self.start

    def overlaps(self, other):
        """True when the two ranges share at least one byte."""
        return self.start < other.end and other.start < self.end

    def contains(self, start, end):
        """True when [start, end) lies entirely inside this range."""
        return self.start <= start and end <= self.end

    def to_dict(self):
        """Plain-value form: {"start", "end", "type"} with a half-open end."""
        return {"start": self.start, "end": self.end, "type": self.type}

    def _key(self):
        return (self.start, self.end, self.type)

    def __eq__(self, other):
        return isinstance(other, Range) and self._key() == other._key()

    def __ne__(self, other):
        return not self == other

    def __lt__(self, other):
        return self._key() < other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "Range(%#x, %#x, %r)" % (self.start, self.end, self.type)


def _as_range(item, rtype=RAM):
    """Accept a Range or a (start, end) pair, as callers often hold tuples."""
    if isinstance(item, Range):
        return item
    start, end = item
    return Range(start, end, rtype)


def merge(ranges, rtype=None):
    """Union of ranges: overlapping or touching ranges become one.

    The result carries ``rtype`` if given, else the first merged range's type; use it on ranges
    of one kind (all RAM, all taken), since merging across types loses meaning.
    """
    out = []
    for r in sorted(_as_range(x) for x in ranges):
        if r.size == 0:
            continue
        if out and r.start <= out[-1].end:
            if r.end > out[-1].end:
                out[-1] = Range(out[-1].start, r.end, out[-1].type)
        else:
            out.append(Range(r.start, r.end, rtype if rtype is not None else r.type))
    return out


def subtract(ranges, holes):
    """Parts of ``ranges`` not covered by any of ``holes``; sorted, types kept.

    A sweep over sorted, merged holes: O((n + m) log(n + m)), never a pairwise scan.
    """
    cut = merge(holes)
    out = []
    for r in sorted(_as_range(x) for x in ranges):
        start = r.start
        # cut is sorted and disjoint; skip the holes wholly left of r with a bisect-free walk
        # from the first hole that can touch it.
        lo, hi = 0, len(cut)
        while lo < hi:
            mid = (lo + hi) // 2
            if cut[mid].end <= start:
                lo = mid + 1
            else:
                hi = mid
        i = lo
        while i < len(cut) and cut[i].start < r.end:
            if cut[i].start > start:
                out.append(Range(start, cut[i].start, r.type))
            start = max(start, cut[i].end)
            i += 1
        if start < r.end:
            out.append(Range(start, r.end, r.type))
    return out


def intersect(ranges, window_start, window_end):
    """Parts of ``ranges`` inside [window_start, window_end)."""
    out = []
    for r in ranges:
        s, e = max(r.start, window_start), min(r.end, window_end)
        if s < e:
            out.append(Range(s, e, r.type))
    return out


class MemoryMap:
    """The machine's physical memory map (the firmware's view in /sys/firmware/memmap, or /proc/iomem's
    top level).

    Ranges are kept as given (sorted); ``ram()`` is what placement uses.  Firmware maps can
    overlap; where a non-RAM range overlaps RAM, the non-RAM type wins, because writing a segment
    into firmware-reserved memory corrupts it while skipping a little RAM costs nothing.
    """

    def __init__(self, ranges):
        self.ranges = sorted(_as_range(r) for r in ranges)
        self._ram = None

    @classmethod
    def from_list(cls, items):
        """Inverse of ``to_list()``; raises HostError on malformed items (recorded data may be bad)."""
        try:
            return cls(Range(int(d["start"]), int(d["end"]), str(d["type"])) for d in items)
        except (KeyError, TypeError, ValueError) as exc:
            raise HostError("memory map entry is malformed (%s); re-record the host's memory map" % exc)

    def ram(self):
        """Usable RAM as sorted, disjoint, merged ranges of type "System RAM"."""
        if self._ram is None:
            ram = merge((r for r in self.ranges if r.type == RAM), rtype=RAM)
            taken = [r for r in self.ranges if r.type != RAM and r.size]
            self._ram = subtract(ram, taken)
        return list(self._ram)

    def total_ram(self):
        """Bytes of usable RAM."""
        return sum(r.size for r in self.ram())

    def contains_ram(self, start, end):
        """True when every byte of [start, end) is usable RAM."""
        if end <= start:
            return True
        for r in self.ram():
            if r.start <= start < r.end:
                return end <= r.end
        return False

    def find_hole(self, size, align=PAGE_SIZE, min_addr=0, max_addr=None, top_down=False, avoid=()):
        """Place ``size`` bytes in RAM and return the start address.

        ``align`` is the start's alignment.  ``min_addr`` is the lowest allowed start and
        ``max_addr`` the highest allowed address of the *last* byte (inclusive, like kexec-tools'
        hole_max and the kernel's buf_max), so both 0xffffffff and 0x100000000 keep a page-sized
        segment below 4 GiB.  ``top_down`` takes the highest fitting address, as the kernel does
        for kexec_file loads and kexec-tools for initrds; otherwise the lowest.  ``avoid`` holds
        Ranges or (start, end) pairs already taken (earlier segments).

        Raises PlanError when nothing fits, naming the free holes so the user sees why.
        """
        if size <= 0:
            raise PlanError("cannot place a segment of size %#x: sizes must be positive" % size)
        if align <= 0:
            raise PlanError("alignment %#x is invalid: it must be positive" % align)
        hi = (max_addr + 1) if max_addr is not None else None
        candidates = subtract(self.ram(), avoid)
        if hi is not None:
            candidates = intersect(candidates, min_addr, hi)
        else:
            candidates = intersect(candidates, min_addr, 1 << 64)
        order = reversed(candidates) if top_down else candidates
        for r in order:
            if top_down:
                start = align_down(r.end - size, align)
                if start >= r.start and r.end - size >= 0:
                    return start
            else:
                start = align_up(r.start, align)
                if start + size <= r.end:
                    return start
        free = ", ".join("%#x-%#x" % (r.start, r.end) for r in candidates) or "none"
        raise PlanError(
            "no hole of %#x bytes aligned to %#x between %#x and %s in RAM (free: %s); "
            "free memory (smaller initrd, crashkernel= reservation) or widen the window"
            % (size, align, min_addr, "%#x" % max_addr if max_addr is not None else "the top", free)
        )

    def to_list(self):
        """Plain-value form: list of Range dicts."""
        return [r.to_dict() for r in self.ranges]

    def __eq__(self, other):
        return isinstance(other, MemoryMap) and self.ranges == other.ranges

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "MemoryMap(%r)" % (self.ranges,)
