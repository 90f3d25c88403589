# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""EFI zboot: a small EFI application that carries the compressed Image (CONFIG_EFI_ZBOOT).

Its first bytes (drivers/firmware/efi/libstub/zboot-header.S) are a DOS header the loader reads:

    0x00  "MZ\\0\\0"
    0x04  "zimg"                the image type
    0x08  u32 payload offset    from the start of the file
    0x0c  u32 payload size      the compressed stream; for gzip it ends with gzip's own size
                                trailer, the other methods have 4 more bytes after it (the
                                build's size_append), not counted here (Makefile.zboot)
    0x18  compression name      NUL-terminated: gzip, zstd22, xzkern, lzma, lz4, lzo
    0x38  u32 LINUX_PE_MAGIC, 0x3c u32 PE header offset

The payload inflates to the Image padded with zeros to image_size.  Booting through EFI runs the
zboot stub; kexec_load cannot, so the loader inflates the payload itself and places the Image.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...core import pe
from ...core.decompress import DAMAGED, decompress
from ...errors import ImageFormatError
from . import header as _header

ZIMG = b"zimg"
#: Names the build writes (comp-type-y) -> what core/decompress.py calls them.
METHODS = {"gzip": "gzip", "zstd22": "zstd", "zstd": "zstd", "xzkern": "xz", "xz": "xz", "lzma": "lzma",
           "bzip2": "bzip2", "lz4": "lz4", "lzo": "lzo"}
#: The methods whose payload size excludes a 4-byte size trailer after it.
_TRAILER = 4


class ZbootHeader:
    """The zboot fields: payload offset and size, compression name."""

    __slots__ = ("payload_offset", "payload_size", "compression")

    def __init__(self, payload_offset, payload_size, compression):
        self.payload_offset = payload_offset
        self.payload_size = payload_size
        self.compression = compression

    @classmethod
    def parse(cls, view):
        if len(view) < 0x40:
            raise ImageFormatError("zboot kernel is %d bytes, too short for its header%s" % (len(view), DAMAGED))
        offset, size = struct.unpack_from("<II", view, 8)
        raw = bytes(view[0x18:0x38])
        name = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        if offset < 0x40 or size == 0 or offset + size > len(view):
            raise ImageFormatError("zboot kernel: payload at %#x+%#x lies outside the %#x-byte file%s"
                                   % (offset, size, len(view), DAMAGED))
        return cls(offset, size, name)

    def to_dict(self):
        return {"payload_offset": self.payload_offset, "payload_size": self.payload_size,
                "compression": self.compression}


class Zboot:
    """Format ``zboot`` (an EFI zboot PE carrying a compressed Image)."""

    name = "zboot"

    @staticmethod
    def probe(buf):
        view = memoryview(buf)
        try:
            return len(view) >= 0x40 and bytes(view[:2]) == pe.MZ and bytes(view[4:8]) == ZIMG
        finally:
            view.release()

    @staticmethod
    def signed(buf):
        return pe.is_signed(buf)

    @classmethod
    def payload(cls, buf):
        """(ZbootHeader, decompress.py's name for its method, the stream to inflate: a view)."""
        view = memoryview(buf)
        zhdr = ZbootHeader.parse(view)
        method = METHODS.get(zhdr.compression)
        if method is None:
            raise ImageFormatError("zboot kernel compressed with %r, which this loader does not know; use a kernel "
                                   "built with CONFIG_KERNEL_GZIP or _ZSTD, or its uncompressed Image"
                                   % zhdr.compression)
        if method in ("lz4", "lzo"):
            raise ImageFormatError("zboot kernel compressed with %s, which the Python standard library cannot "
                                   "inflate; use a kernel built with CONFIG_KERNEL_GZIP (or _ZSTD with the "
                                   "zstandard module installed), or its uncompressed Image" % zhdr.compression)
        end = zhdr.payload_offset + zhdr.payload_size
        if method != "gzip":
            # The size trailer after the stream says how large the Image is: keep it for the bound.
            end = min(len(view), end + _TRAILER)
        return zhdr, method, view[zhdr.payload_offset:end]

    @classmethod
    def kernel(cls, buf):
        zhdr, method, stream = cls.payload(buf)
        try:
            data = decompress(stream, method)
        except ImageFormatError as err:
            raise ImageFormatError("zboot kernel (%s payload at %#x): %s" % (zhdr.compression, zhdr.payload_offset, err))
        finally:
            stream.release()
        if not _header.has_magic(data):
            raise ImageFormatError("zboot kernel: its %s payload is not an arm64 Image (no 'ARM\\x64' at 0x38)%s"
                                   % (zhdr.compression, DAMAGED))
        return _header.KernelImage.from_buffer(cls.name, data, "the Image inside the zboot kernel")

    @classmethod
    def need(cls, buf):
        """The inflated size (the payload is padded to image_size), from the stream's size trailer."""
        _zhdr, _method, stream = cls.payload(buf)
        try:
            return struct.unpack_from("<I", stream, len(stream) - 4)[0] if len(stream) >= 4 else len(buf)
        finally:
            stream.release()
