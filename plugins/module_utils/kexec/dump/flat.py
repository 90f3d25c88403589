# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""makedumpfile's flattened format: a file sent as a stream of (offset, bytes) records.

``makedumpfile -F`` writes its dump this way so that it can go through a pipe (to ssh) although
the dump file is written out of order; ``makedumpfile -R`` on the other end writes every record
at its offset.  The stream is a 4096-byte header (the signature ``makedumpfile``, then type 1 and
version 1 as big-endian 64-bit numbers), records of a big-endian (offset, size) pair followed by
``size`` bytes, and an end record whose offset is -1.

The same format carries our sparse copy when makedumpfile is absent (only the non-zero blocks
are records), so a dump server has one kind of stream to take.  This module has no imports from
the package: the dump server's receiver (receive.py) is installed beside it alone.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

SIGNATURE = b"makedumpfile"
HEADER_SIZE = 4096
FLAT_TYPE = 1
FLAT_VERSION = 1
END = -1
_PAIR = struct.Struct(">qq")
#: Records bigger than this are refused when reading: a corrupted size, not a dump.
MAX_RECORD = 1 << 30


class FlatError(Exception):
    """The stream is not in the flattened format, or it ended before its end record."""


def header():
    """The 4096-byte header that starts every stream."""
    return (SIGNATURE.ljust(16, b"\0") + _PAIR.pack(FLAT_TYPE, FLAT_VERSION)).ljust(HEADER_SIZE, b"\0")


def record(offset, data):
    """One record: ``data`` belongs at ``offset`` of the file."""
    return _PAIR.pack(offset, len(data)) + bytes(data)


def end():
    """The end record (offset and size -1, as makedumpfile writes it)."""
    return _PAIR.pack(END, END)


def _read_exact(read, n, what):
    parts, got = [], 0
    while got < n:
        data = read(n - got)
        if not data:
            raise FlatError("the stream ended inside %s (%d of %d bytes)" % (what, got, n))
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def check_header(data):
    """Raise FlatError unless ``data`` (4096 bytes) is a flattened-format header."""
    if len(data) < 32 or data[:16].rstrip(b"\0") != SIGNATURE:
        raise FlatError("not a flattened dump stream (no makedumpfile signature)")
    kind, version = _PAIR.unpack_from(data, 16)
    if (kind, version) != (FLAT_TYPE, FLAT_VERSION):
        raise FlatError("flattened stream of type %d version %d, not %d/%d" % (kind, version, FLAT_TYPE, FLAT_VERSION))


def records(read, chunk=1 << 20):
    """Yield ``(offset, bytes)`` pieces (at most ``chunk`` bytes each) from a stream read with
    ``read(n)``, header checked, up to the end record; FlatError when it is malformed or cut."""
    check_header(_read_exact(read, HEADER_SIZE, "the header"))
    while True:
        offset, size = _PAIR.unpack(_read_exact(read, _PAIR.size, "a record header"))
        if offset == END:
            return
        if offset < 0 or size < 0 or size > MAX_RECORD:
            raise FlatError("record at offset %d of %d bytes: corrupted stream" % (offset, size))
        done = 0
        while done < size:
            piece = _read_exact(read, min(chunk, size - done), "a record")
            yield offset + done, piece
            done += len(piece)
