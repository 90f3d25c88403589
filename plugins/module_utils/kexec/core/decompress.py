# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decompress kernel payloads (compressed kernels, compressed initramfs parts) with the standard
library, bounded.

A kernel build appends the uncompressed size (4 bytes, little-endian, the build's size_append)
after the compressed stream, whatever the compressor; ``declared_size`` reads it.  gzip, xz, lzma
and bzip2 are in the standard library; zstd needs the optional ``zstandard`` module; lzo and lz4
are recognised only to say so.

Output is bounded by the declared size (or MAX_OUTPUT) and produced in chunks, so a corrupted or
hostile payload can only make us raise ImageFormatError, never eat all memory.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bz2
import lzma
import struct
import zlib

from ..errors import ImageFormatError

#: What a damaged payload's refusal tells the user to do.
DAMAGED = "; the file is damaged: reinstall its package or pass an intact one"
MAX_OUTPUT = 1 << 30        # no vmlinux is a gigabyte; a payload that says so is corrupt
CHUNK = 1 << 20

# Longest magic first so "BZh" is not shadowed, etc.
MAGICS = (
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x89LZO", "lzo"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x1f\x8b", "gzip"),
    (b"\x1f\x9e", "gzip"),       # old gzip magic, still accepted by the kernel's decompressor
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
)


def detect(buf):
    """Name of the compression format of ``buf`` by its magic, or None."""
    head = bytes(memoryview(buf)[:6])
    for magic, name in MAGICS:
        if head.startswith(magic):
            return name
    return None


def declared_size(buf):
    """The uncompressed size appended after the compressed stream (0 if the buffer is tiny)."""
    if len(buf) < 8:
        return 0
    return struct.unpack_from("<I", buf, len(buf) - 4)[0]


class _Sink:
    """Collects output and enforces the size bound."""

    def __init__(self, limit, fmt):
        self.out = bytearray()
        self.limit = limit
        self.fmt = fmt

    def add(self, data):
        if len(self.out) + len(data) > self.limit:
            raise ImageFormatError(
                "%s payload decompresses to more than %d bytes (the size it declares); the "
                "image is corrupted%s" % (self.fmt, self.limit, DAMAGED))
        self.out += data


def _run_stdlib(view, dec, sink, step):
    """Feed ``view`` through ``dec`` in chunks, pulling at most CHUNK bytes of output at a time."""
    pos = 0
    while pos < len(view) and not dec.eof:
        chunk = view[pos:pos + CHUNK]
        pos += len(chunk)
        sink.add(step(dec, chunk))
        while not dec.eof and not _needs_input(dec):
            sink.add(step(dec, b""))
    return dec.eof


def _needs_input(dec):
    if hasattr(dec, "needs_input"):
        return dec.needs_input
    return not dec.unconsumed_tail  # zlib


def _lzma_step(dec, data):
    return dec.decompress(data, CHUNK)


def _zlib_step(dec, data):
    if not data:
        data = dec.unconsumed_tail
    return dec.decompress(data, CHUNK)


def _zstd(view, sink):
    try:
        import zstandard  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImageFormatError(
            "the kernel payload is zstd-compressed and the Python module 'zstandard' is not "
            "installed; install it (python3-zstandard) or use a gzip/xz kernel")
    # One frame, then the kernel's 4-byte size trailer: a decompression object stops at the end
    # of the frame and leaves the trailer alone (a stream reader would try it as a next frame).
    try:
        dec = zstandard.ZstdDecompressor().decompressobj()
        pos = 0
        while pos < len(view) and not dec.eof:
            sink.add(dec.decompress(view[pos:pos + CHUNK]))
            pos += CHUNK
        if not dec.eof:
            raise ImageFormatError("truncated zstd payload: the frame does not end%s" % DAMAGED)
    except zstandard.ZstdError as err:
        raise ImageFormatError("corrupted zstd payload: %s%s" % (err, DAMAGED))


def decompress(buf, fmt=None, limit=None):
    """Decompress ``buf`` (a memoryview of the payload) and return a bytearray.

    ``fmt`` defaults to detect(buf); ``limit`` to the declared size when it is plausible.
    When the payload declares its size, the output must match it exactly.
    """
    view = memoryview(buf)
    fmt = fmt or detect(view)
    if fmt is None:
        raise ImageFormatError("kernel payload has no known compression magic (starts with %s)%s"
                               % (bytes(view[:6]).hex(), DAMAGED))
    expected = declared_size(view)
    if limit is None:
        limit = expected if 0 < expected <= MAX_OUTPUT else MAX_OUTPUT
    sink = _Sink(limit, fmt)
    try:
        if fmt == "xz":
            ended = _run_stdlib(view, lzma.LZMADecompressor(lzma.FORMAT_XZ), sink, _lzma_step)
        elif fmt == "lzma":
            ended = _run_stdlib(view, lzma.LZMADecompressor(lzma.FORMAT_ALONE), sink, _lzma_step)
        elif fmt == "gzip":
            ended = _run_stdlib(view, zlib.decompressobj(16 + zlib.MAX_WBITS), sink, _zlib_step)
        elif fmt == "bzip2":
            ended = _run_stdlib(view, bz2.BZ2Decompressor(), sink, _lzma_step_bz2)
        elif fmt == "zstd":
            _zstd(view, sink)
            ended = True
        else:
            raise ImageFormatError("kernel payload is %s-compressed, which this loader cannot "
                                   "decompress (supported: gzip, xz, lzma, bzip2, zstd); use a kernel "
                                   "compressed with one of those" % fmt)
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError) as err:
        raise ImageFormatError("corrupted %s payload: %s%s" % (fmt, err, DAMAGED))
    if not ended:
        raise ImageFormatError("%s payload is truncated: the compressed stream does not end%s"
                               % (fmt, DAMAGED))
    if 0 < expected <= MAX_OUTPUT and len(sink.out) != expected:
        raise ImageFormatError("%s payload decompressed to %d bytes but declares %d; the image is "
                               "corrupted%s" % (fmt, len(sink.out), expected, DAMAGED))
    return sink.out


def _lzma_step_bz2(dec, data):
    # BZ2Decompressor has the same max_length interface as LZMADecompressor.
    return dec.decompress(data, CHUNK)
