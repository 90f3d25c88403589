# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The uncompressed arm64 ``Image``, bare or behind its EFI stub (a PE/COFF header whose DOS
"MZ" is the first instruction, code0): Debian's ``vmlinuz-*-arm64`` is one, signed.

It is loaded as it is: the boot protocol enters the Image at its first byte whether or not it
doubles as an EFI application, and the file's bytes are mapped, never copied.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...core import pe
from . import header as _header


class Image:
    """Format ``Image`` (kexec-tools' image-arm64 file type)."""

    name = "Image"

    @staticmethod
    def probe(buf):
        """The arm64 magic at 0x38 (a zboot image has its own PE magic there, not this one)."""
        return _header.has_magic(buf)

    @staticmethod
    def signed(buf):
        """True when the EFI stub's PE header carries an Authenticode certificate table."""
        return pe.is_signed(buf)

    @classmethod
    def kernel(cls, buf):
        """The KernelImage over ``buf`` (not copied)."""
        return _header.KernelImage.from_buffer(cls.name, buf)

    @classmethod
    def need(cls, buf):
        """Bytes the kernel occupies once placed: image_size from its header."""
        return _header.ImageHeader.parse(buf).image_size
