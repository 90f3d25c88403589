# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recognise an initramfs before it is loaded, so a wrong file never reaches the next kernel.

A kernel booted with a file that is not an initramfs cannot find its root file system and
panics, far from any SSH session. The kernel's own unpacker accepts a sequence of cpio archives
("newc" 070701, "crc" 070702, or the old binary/ASCII 070707), each either plain or compressed
(gzip, bzip2, lzma, xz, lzo, lz4, zstd), with zero padding between them; Debian's initrd.img is
an uncompressed cpio of CPU microcode followed by a compressed one. We check how the file
starts, after any zero padding, which is cheap and catches a truncated download, a kernel passed
as an initrd or an arbitrary file; the contents of compressed parts are left to the kernel.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import ImageFormatError
from .decompress import MAGICS

CPIO_MAGICS = (b"070701", b"070702", b"070707", b"\xc7\x71", b"\x71\xc7")
# Padding the kernel skips before an archive; more than this of zeros is not an initramfs.
MAX_LEADING_ZEROS = 1 << 20


def initramfs_format(buf):
    """'cpio' or the compression name the initramfs starts with, or None if it is none of them."""
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    pos, end = 0, min(len(view), MAX_LEADING_ZEROS)
    while pos < end and view[pos] == 0:
        pos += 1
    head = bytes(view[pos:pos + 8])
    if any(head.startswith(m) for m in CPIO_MAGICS):
        return "cpio"
    for magic, name in MAGICS:
        if head.startswith(magic):
            return name
    return None


def check_initramfs(buf, path):
    """Raise ImageFormatError unless ``buf`` starts like an initramfs the kernel can unpack."""
    if initramfs_format(buf) is None:
        view = memoryview(buf)
        head = bytes(view[:16]).hex()
        hint = ""
        if bytes(view[0x202:0x206]) == b"HdrS" or bytes(view[:4]) == b"\x7fELF":
            hint = " (it looks like a kernel image: pass the initrd.img that belongs to it)"
        raise ImageFormatError(
            "initrd %s is not an initramfs: it should start with a cpio archive or a compressed one "
            "(gzip, xz, zstd, lz4, lzma, bzip2, lzo), but starts with %s%s; pass the initrd.img "
            "built for this kernel (update-initramfs -c -k <version>), nothing was loaded"
            % (path, head, hint))
