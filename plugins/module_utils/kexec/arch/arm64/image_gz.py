# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``Image.gz``: a gzip-compressed arm64 Image.  The arm64 kernel has no decompressor of its own
(booting.rst, "Decompress the kernel image"), so the loader inflates it and places the Image."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import zlib

from ...core.decompress import DAMAGED, declared_size, decompress
from ...errors import ImageFormatError
from . import header as _header

GZIP_MAGIC = b"\x1f\x8b"


def _head(view, size):
    """The first ``size`` decompressed bytes of a gzip stream (its Image header), cheaply."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bytes(view[:1 << 16]), size)
    except zlib.error as err:
        raise ImageFormatError("corrupted gzip kernel: %s%s" % (err, DAMAGED))


class ImageGz:
    """Format ``Image.gz``."""

    name = "Image.gz"

    @staticmethod
    def probe(buf):
        """gzip magic, and a stream that starts with an arm64 Image header."""
        view = memoryview(buf)
        try:
            if len(view) < 18 or bytes(view[:2]) != GZIP_MAGIC:
                return False
            try:
                return _header.has_magic(_head(view, _header.HEADER_SIZE))
            except ImageFormatError:
                return False
        finally:
            view.release()

    @staticmethod
    def signed(buf):  # pylint: disable=unused-argument
        """A gzip stream carries no signature."""
        return False

    @classmethod
    def kernel(cls, buf):
        """Inflate ``buf`` (bounded by the size its trailer declares) into a KernelImage."""
        view = memoryview(buf)
        try:
            data = decompress(view, "gzip")
        finally:
            view.release()
        return _header.KernelImage.from_buffer(cls.name, data, "the Image inside the gzip kernel")

    @classmethod
    def need(cls, buf):
        """image_size of the Image inside, read from the first decompressed bytes."""
        view = memoryview(buf)
        try:
            head = _head(view, _header.HEADER_SIZE)
            size = declared_size(view)
        finally:
            view.release()
        return max(_header.ImageHeader.parse(head, "the Image inside the gzip kernel").image_size, size)
