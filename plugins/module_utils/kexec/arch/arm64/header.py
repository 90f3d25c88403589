# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The 64-byte header every arm64 kernel ``Image`` starts with (Documentation/arch/arm64/booting.rst).

    u32 code0, code1      branch to stext (with an EFI stub, code0 also spells "MZ")
    u64 text_offset       the Image goes text_offset bytes above a 2 MiB aligned base
    u64 image_size        bytes from the Image's start the kernel needs free (text, data, bss)
    u64 flags             bit 0 big-endian, bits 1-2 page size (0 unspecified, 1 4K, 2 16K, 3 64K),
                          bit 3: 0 = place the base as close to the start of DRAM as possible,
                                 1 = anywhere, as long as the image_size bytes stay below 2**48
    u64 res2, res3, res4
    u32 magic             "ARM\\x64"
    u32 res5              offset of the PE header when the Image has an EFI stub

Parsing reads only the header; the Image itself stays a view over the caller's buffer.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...errors import ImageFormatError

MAGIC = b"ARM\x64"
MAGIC_OFFSET = 0x38
HEADER = struct.Struct("<IIQQQQQQ4sI")
HEADER_SIZE = HEADER.size  # 64

FLAG_BE = 0x1
FLAG_PAGE_SIZE_SHIFT = 1
FLAG_PAGE_SIZE_MASK = 0x3
FLAG_PHYS_ANYWHERE = 0x8
PAGE_SIZES = {0: None, 1: 4096, 2: 16384, 3: 65536}

#: The base the Image sits above is 2 MiB aligned (booting.rst, "Call the kernel image").
BASE_ALIGN = 2 << 20
#: With the placement flag set, every image_size byte must stay within the 48-bit physical range.
PHYS_48BIT_LIMIT = 1 << 48
#: Kernels before 3.17 have image_size 0 and an implied text_offset of 0x80000.
LEGACY_TEXT_OFFSET = 0x80000

DAMAGED = ("; the kernel file is damaged or not an arm64 kernel: reinstall its package "
           "(apt-get install --reinstall linux-image-<version>) or pass an intact one")


def has_magic(buf):
    """True when ``buf`` carries the arm64 Image magic at 0x38 (cheap, never raises)."""
    try:
        view = memoryview(buf)
        try:
            return len(view) >= HEADER_SIZE and bytes(view[MAGIC_OFFSET:MAGIC_OFFSET + 4]) == MAGIC
        finally:
            view.release()
    except (TypeError, ValueError):
        return False


class ImageHeader:
    """The header as a plain value."""

    __slots__ = ("code0", "code1", "text_offset", "image_size", "flags", "pe_offset")

    def __init__(self, code0, code1, text_offset, image_size, flags, pe_offset):
        self.code0 = code0
        self.code1 = code1
        self.text_offset = text_offset
        self.image_size = image_size
        self.flags = flags
        self.pe_offset = pe_offset

    @classmethod
    def parse(cls, buf, what="kernel"):
        """The header of ``buf``; ImageFormatError naming what is wrong when it is not one we load."""
        view = memoryview(buf)
        try:
            if len(view) < HEADER_SIZE:
                raise ImageFormatError("%s is %d bytes, too short for an arm64 Image header (64 bytes)%s"
                                       % (what, len(view), DAMAGED))
            code0, code1, text_offset, image_size, flags, _r2, _r3, _r4, magic, res5 = HEADER.unpack_from(view, 0)
            size = len(view)
        finally:
            view.release()
        if magic != MAGIC:
            raise ImageFormatError("%s has no arm64 Image magic 'ARM\\x64' at 0x38 (found %s)%s"
                                   % (what, magic.hex(), DAMAGED))
        header = cls(code0, code1, text_offset, image_size, flags, res5)
        header.check(size, what)
        return header

    def check(self, size, what="kernel"):
        """Refuse what the boot protocol does not let a loader place correctly."""
        if self.flags & FLAG_BE:
            raise ImageFormatError("%s is a big-endian arm64 kernel (flags bit 0); this loader loads "
                                   "little-endian kernels: pass the distribution's arm64 kernel" % what)
        if self.image_size == 0:
            raise ImageFormatError("%s has image_size 0 (a kernel older than 3.17, which does not say how much "
                                   "memory it needs after its image); pass a kernel from Linux 3.17 or later" % what)
        if self.text_offset % 4096 or self.text_offset >= BASE_ALIGN:
            raise ImageFormatError("%s says text_offset %#x, which is not a page multiple below 2 MiB%s"
                                   % (what, self.text_offset, DAMAGED))
        if self.image_size > 1 << 32:
            raise ImageFormatError("%s says image_size %#x (over 4 GiB): not a kernel%s" % (what, self.image_size, DAMAGED))
        if self.image_size < min(size, HEADER_SIZE):
            raise ImageFormatError("%s says image_size %#x, smaller than its own header%s" % (what, self.image_size, DAMAGED))

    @property
    def page_size(self):
        """The kernel's page size from flags bits 1-2 (None when unspecified)."""
        return PAGE_SIZES[(self.flags >> FLAG_PAGE_SIZE_SHIFT) & FLAG_PAGE_SIZE_MASK]

    @property
    def anywhere(self):
        """Flags bit 3: the base may be anywhere below the 48-bit limit (else close to DRAM's start)."""
        return bool(self.flags & FLAG_PHYS_ANYWHERE)

    @property
    def has_pe_stub(self):
        """code0 spells "MZ": the Image doubles as an EFI application (res5 is its PE header offset)."""
        return self.code0 & 0xFFFF == 0x5A4D

    def to_dict(self):
        return {"text_offset": self.text_offset, "image_size": self.image_size, "flags": self.flags,
                "page_size": self.page_size, "anywhere": self.anywhere, "pe_stub": self.has_pe_stub}

    def __eq__(self, other):
        return isinstance(other, ImageHeader) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "ImageHeader(text_offset=%#x, image_size=%#x, flags=%#x)" % (self.text_offset, self.image_size, self.flags)


class KernelImage:
    """A decompressed arm64 Image ready to place: its header and its bytes (``data``: a view over
    the caller's mapping for an uncompressed file, the decompressed bytes otherwise).

    Only ``image_size`` bytes belong to the kernel: a signed file carries its certificate table
    after them, which is not part of the memory image.
    """

    def __init__(self, fmt, header, data):
        self.format = fmt
        self.header = header
        view = memoryview(data)
        self.data = view[:min(len(view), header.image_size)]

    @classmethod
    def from_buffer(cls, fmt, buf, what="kernel"):
        return cls(fmt, ImageHeader.parse(buf, what), buf)

    @property
    def memsz(self):
        return self.header.image_size
