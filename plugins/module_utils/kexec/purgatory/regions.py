# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The table every purgatory checks before it enters the next kernel: one sha256 per segment.

Region ``i`` of the table is ``plan.segments[i]`` (an empty segment keeps its slot with length 0,
which the purgatory skips), so a mismatch prints the segment's index in the plan report on the
console -- "fleetboot purgatory: sha256 mismatch in segment N, refusing to boot" -- and halts.
One digest per segment also means the loader reads each file once: the digest stored in the
table is handed to the segment (``Segment.remember_sha256``), and the plan report shows that same
value instead of hashing a 64 MiB initrd a second time.  The zero fill between ``bufsz`` and
``memsz`` is not hashed: it is not data we supplied, the kernel writes it itself, and what lives
there (.bss, decompression scratch) is cleared again by the new kernel; leaving it out keeps the
crash path, where every millisecond counts, short.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ..core import digest
from ..errors import PurgatoryError

REGIONS_SYMBOL = "fleetboot_sha256_regions"
MAX_REGIONS = 16
#: struct region { u64 start; u64 len; u8 sha256[32]; }: 48 bytes, no padding (purgatory.c asserts it).
REGION_FORMAT = "<QQ32s"
REGION_SIZE = struct.calcsize(REGION_FORMAT)
DIGEST_SIZE = 32


def _buffer_len(buf):
    view = memoryview(buf)
    try:
        return view.nbytes
    finally:
        view.release()


def region_table(segments):
    """The regions the purgatory will check for *segments*: [(start, len, sha256 digest bytes)].

    One region per segment, in order, so region ``i`` is ``segments[i]``: its ``bufsz`` bytes at
    ``mem``.  Each buffer is read exactly once (chunked, giving mapped file pages back), and the
    digest is handed to the segment so the plan report does not hash it again.  An empty segment
    keeps its slot with length 0 (the purgatory skips it) and the sha256 of no bytes.
    """
    segments = list(segments)
    for seg in segments:
        if seg.buf is None:
            raise PurgatoryError("segment %r has no contents yet; link the purgatory after every "
                                 "other segment is final" % (seg.what,))
    if len(segments) > MAX_REGIONS:
        raise PurgatoryError("%d segments to verify, the purgatory holds %d; the kernel would "
                             "refuse that many segments anyway" % (len(segments), MAX_REGIONS))
    hexes = digest.sha256_many((seg.buf, seg.bufsz) if seg.bufsz else (b"", 0) for seg in segments)
    regions = []
    for seg, hexdigest in zip(segments, hexes):
        # Only a digest of the whole buffer is the segment's own sha256.
        remember = getattr(seg, "remember_sha256", None)
        if remember is not None and seg.bufsz == _buffer_len(seg.buf):
            remember(hexdigest)
        regions.append((seg.mem, seg.bufsz, bytes.fromhex(hexdigest)))
    return regions


def pack_regions(regions):
    """The bytes of ``fleetboot_sha256_regions``: MAX_REGIONS little-endian
    {u64 start, u64 len, u8 sha256[32]}, unused entries all zero."""
    if len(regions) > MAX_REGIONS:
        raise PurgatoryError("%d regions, the purgatory holds %d" % (len(regions), MAX_REGIONS))
    out = bytearray(MAX_REGIONS * REGION_SIZE)
    for i, (start, length, sha) in enumerate(regions):
        if len(sha) != DIGEST_SIZE:
            raise PurgatoryError("region %d has a %d-byte digest, not a sha256" % (i, len(sha)))
        struct.pack_into(REGION_FORMAT, out, i * REGION_SIZE, start, length, bytes(sha))
    return bytes(out)
