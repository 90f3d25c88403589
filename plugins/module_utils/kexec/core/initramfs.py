# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check an initramfs the way the kernel's unpacker reads it, before it is loaded.

A kernel booted with a file that is not an initramfs cannot find its root file system and panics,
far from any SSH session.  The kernel's unpacker (unpack_to_rootfs in init/initramfs.c) reads a
sequence of parts, skipping zero bytes between them: a cpio archive in the "newc" (070701) or
"crc" (070702) format, member after member up to its ``TRAILER!!!``, or a compressed stream
(gzip, bzip2, lzma, xz, lzo, lz4, zstd) whose output is such a sequence again.  Debian's
initrd.img is an uncompressed cpio of CPU microcode followed by a compressed one.  The old
"odc" (070707) and binary cpio formats are rejected by the kernel ("no cpio magic").

The walk here follows the same structure, cheaply: plain archives member by member through the
mapping (only headers are read; file data is skipped by its size), and a compressed part only as
far as needed to see valid cpio headers at the start of its output.  What follows a compressed
part is not walked (its end is only known by decompressing all of it, which the kernel does at
boot anyway).  lzo and lz4 have no decompressor in the standard library: such a part is
accepted by its magic.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bz2
import lzma
import zlib

from ..errors import ImageFormatError
from .decompress import MAGICS

NEWC = b"070701"
CRC = b"070702"
OLD_CPIO = (b"070707", b"\xc7\x71", b"\x71\xc7")
CPIO_MAGICS = (NEWC, CRC) + OLD_CPIO
HEADER_SIZE = 110
TRAILER = b"TRAILER!!!"
#: Longest member name the kernel takes (PATH_MAX, the unpacker's name buffer).
MAX_NAME = 4096
#: Decompressed bytes of a compressed part that are looked at (enough for many cpio headers).
PREFIX = 256 << 10
#: Compressed bytes fed to find that prefix: a part that yields nothing from this much is corrupt.
MAX_INPUT = 8 << 20
#: Parts (archives and compressed streams) walked: more than any initramfs has.
MAX_PARTS = 64
#: Zero padding the walk skips in a row before it calls the rest "zeros only".
MAX_ZEROS = 16 << 20


class InitramfsError(ImageFormatError):
    """The initrd is not something the kernel's unpacker would take."""


def _view(buf):
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _align4(n):
    return (n + 3) & ~3


def _skip_zeros(view, pos, end):
    """First non-zero byte at or after ``pos`` (``end`` when none), checked in chunks."""
    limit = min(end, pos + MAX_ZEROS)
    while pos < limit:
        chunk = bytes(view[pos:min(pos + 4096, limit)])
        stripped = chunk.lstrip(b"\0")
        if stripped:
            return pos + len(chunk) - len(stripped)
        pos += len(chunk)
    return pos


def _hex_fields(header, where):
    """The 13 eight-digit hex fields of a newc/crc header; InitramfsError when one is not hex."""
    fields = []
    for i in range(13):
        text = header[6 + 8 * i:14 + 8 * i]
        try:
            if len(text) != 8 or not all(c in b"0123456789abcdefABCDEF" for c in text):
                raise ValueError(text)
            fields.append(int(text, 16))
        except ValueError:
            raise InitramfsError("%s: field %d of the cpio header is %r, not 8 hex digits" % (where, i, bytes(text)))
    return fields


def walk_cpio(view, pos, end, what, partial=False):
    """Walk one newc/crc archive from ``pos`` to just after its trailer; returns that offset.

    ``partial``: ``view`` is only a prefix of the data (a compressed part's first output), so
    running out of bytes is fine; a malformed header is not.  Returns None then.
    """
    members = 0
    while True:
        where = "%s at offset %#x" % (what, pos)
        header = bytes(view[pos:min(end, pos + HEADER_SIZE)])
        magic = header[:6]
        # A prefix (the end of a decompressed window) may hold only the start of the magic.
        if not (NEWC.startswith(magic) or CRC.startswith(magic)):
            if header[:6] in OLD_CPIO or header[:2] in OLD_CPIO:
                raise InitramfsError("%s: an old-format (odc or binary) cpio member, which the kernel's unpacker "
                                     "rejects; rebuild the archive in the newc format (cpio -H newc)" % where)
            raise InitramfsError("%s: expected the next cpio header (070701) but found %s; the archive is "
                                 "corrupted or truncated" % (where, header[:8].hex()))
        if end - pos < HEADER_SIZE:
            if partial:
                return None
            raise InitramfsError("%s: the archive is truncated (a cpio header needs %d bytes, %d remain)"
                                 % (where, HEADER_SIZE, max(0, end - pos)))
        fields = _hex_fields(header, where)
        filesize, namesize = fields[6], fields[11]
        if namesize < 2 or namesize > MAX_NAME:
            raise InitramfsError("%s: a cpio member with a name of %d bytes; the archive is corrupted"
                                 % (where, namesize))
        name_end = pos + HEADER_SIZE + namesize
        if name_end > end:
            if partial:
                return None
            raise InitramfsError("%s: the archive is truncated inside a member's name" % where)
        name = bytes(view[pos + HEADER_SIZE:name_end])
        if name[-1:] != b"\0" or b"\0" in name[:-1]:
            raise InitramfsError("%s: a cpio member name that is not NUL-terminated; the archive is corrupted"
                                 % where)
        data_end = _align4(name_end) + filesize
        if data_end > end:
            if partial:
                return None
            raise InitramfsError("%s: member %r says it holds %d bytes but the file ends first; the initrd is "
                                 "truncated" % (where, name[:-1].decode("utf-8", "replace")[:60], filesize))
        pos = _align4(data_end)
        members += 1
        if name[:-1] == TRAILER:
            return min(pos, end)
        if partial and members >= 64:
            return None  # enough headers seen to trust the part


def _decompressor(fmt):
    if fmt == "gzip":
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return lambda data: dec.decompress(data, PREFIX)
    if fmt == "xz":
        dec = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        return lambda data: dec.decompress(data, PREFIX)
    if fmt == "lzma":
        dec = lzma.LZMADecompressor(lzma.FORMAT_ALONE)
        return lambda data: dec.decompress(data, PREFIX)
    if fmt == "bzip2":
        dec = bz2.BZ2Decompressor()
        return lambda data: dec.decompress(data, PREFIX)
    if fmt == "zstd":
        try:
            import zstandard  # pylint: disable=import-outside-toplevel
        except ImportError:
            return None
        dec = zstandard.ZstdDecompressor().decompressobj()
        return dec.decompress
    return None  # lzo, lz4: no stdlib decompressor


def check_compressed(view, pos, end, fmt, what):
    """Decompress the start of a compressed part and check it begins with cpio headers.

    Returns False when the format cannot be checked here (lzo, lz4, zstd without zstandard).
    """
    step = _decompressor(fmt)
    if step is None:
        return False
    where = "%s: the %s-compressed part at offset %#x" % (what, fmt, pos)
    out = bytearray()
    fed = pos
    try:
        while len(out) < PREFIX and fed < min(end, pos + MAX_INPUT):
            chunk = bytes(view[fed:min(fed + (64 << 10), end)])
            fed += len(chunk)
            out += step(chunk)
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as err:
        raise InitramfsError("%s is corrupt (%s); rebuild the initrd (update-initramfs -u -k <version>), nothing "
                             "was loaded" % (where, err))
    except Exception as err:  # pylint: disable=broad-except  # zstandard.ZstdError and the like
        raise InitramfsError("%s is corrupt (%s); rebuild the initrd (update-initramfs -u -k <version>), nothing "
                             "was loaded" % (where, err))
    if not out:
        raise InitramfsError("%s decompresses to nothing; the initrd is truncated or corrupt" % where)
    inner = _view(bytes(out))
    start = _skip_zeros(inner, 0, len(inner))
    if start >= len(inner):
        return True  # zero padding only so far: nothing wrong seen
    try:
        walk_cpio(inner, start, len(inner), "%s: what the %s-compressed part at offset %#x holds" % (what, fmt, pos),
                  partial=True)
    except InitramfsError as err:
        raise InitramfsError("%s; it is not an initramfs archive: rebuild the initrd (update-initramfs -u -k "
                             "<version>), nothing was loaded" % err)
    return True


def initramfs_format(buf):
    """'cpio' or the compression name the initramfs starts with, or None if it is none of them."""
    view = _view(buf)
    pos = _skip_zeros(view, 0, len(view))
    head = bytes(view[pos:pos + 8])
    if head[:6] in (NEWC, CRC):
        return "cpio"
    for magic, name in MAGICS:
        if head.startswith(magic):
            return name
    return None


def _not_an_initramfs(view, path, pos, detail):
    head = bytes(view[pos:pos + 16]).hex()
    hint = ""
    if bytes(view[0x202:0x206]) == b"HdrS" or bytes(view[:4]) == b"\x7fELF" or bytes(view[0x38:0x3c]) == b"ARMd":
        hint = " (it looks like a kernel image: pass the initrd.img that belongs to it)"
    return InitramfsError(
        "initrd %s is not an initramfs: %s; it should start with a cpio archive or a compressed one "
        "(gzip, xz, zstd, lz4, lzma, bzip2, lzo), but starts with %s%s; pass the initrd.img built for "
        "this kernel (update-initramfs -c -k <version>), nothing was loaded" % (path, detail, head, hint))


def check_initramfs(buf, path):
    """Raise InitramfsError (an ImageFormatError) unless ``buf`` is an initramfs the kernel's
    unpacker would take, as far as it can be seen without decompressing all of it."""
    view = _view(buf)
    end = len(view)
    pos = _skip_zeros(view, 0, end)
    if pos >= end:
        raise _not_an_initramfs(view, path, 0, "it holds only zero bytes")
    parts = 0
    while pos < end and parts < MAX_PARTS:
        head = bytes(view[pos:pos + 8])
        parts += 1
        if head[:6] in (NEWC, CRC) or head[:6] in OLD_CPIO[:1]:
            # unpack_to_rootfs takes a '0' as the start of a cpio archive only at a 4-byte
            # boundary; elsewhere it looks for a compression magic and finds none.
            if pos % 4:
                raise InitramfsError("initrd %s: a cpio archive starts at offset %#x, which is not 4-byte aligned; the "
                                     "kernel's unpacker would not find it; rebuild the initrd, nothing was loaded"
                                     % (path, pos))
            try:
                pos = walk_cpio(view, pos, end, "initrd %s" % path)
            except InitramfsError as err:
                raise InitramfsError("%s; rebuild the initrd (update-initramfs -u -k <version>), nothing was loaded"
                                     % err)
            pos = _skip_zeros(view, pos, end)
            continue
        fmt = None
        for magic, name in MAGICS:
            if head.startswith(magic):
                fmt = name
                break
        if fmt is not None:
            check_compressed(view, pos, end, fmt, "initrd %s" % path)
            return fmt if parts == 1 else "cpio"
        if head[:6] in OLD_CPIO or head[:2] in OLD_CPIO:
            raise InitramfsError("initrd %s is an old-format (odc or binary) cpio archive at offset %#x, which "
                                 "the kernel's unpacker rejects; rebuild it in the newc format (cpio -H newc), "
                                 "nothing was loaded" % (path, pos))
        if parts == 1:
            raise _not_an_initramfs(view, path, pos, "no cpio archive or compressed stream at offset %#x" % pos)
        raise InitramfsError("initrd %s: after its first %d part(s), offset %#x holds neither a cpio archive nor a "
                             "compressed stream (starts with %s); the initrd is corrupted, rebuild it "
                             "(update-initramfs -u -k <version>), nothing was loaded"
                             % (path, parts - 1, pos, head.hex()))
    return "cpio"


def plain_prefix(buf):
    """Bytes at the start of an initramfs that are uncompressed cpio archives (Debian's CPU
    microcode); the rest, from there on, is compressed.  A malformed start counts as compressed."""
    view = _view(buf)
    end = len(view)
    pos = _skip_zeros(view, 0, end)
    while pos < end and bytes(view[pos:pos + 6]) in (NEWC, CRC):
        try:
            pos = _skip_zeros(view, walk_cpio(view, pos, end, "initrd"), end)
        except InitramfsError:
            return 0
    return pos
