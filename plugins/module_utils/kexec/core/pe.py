# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PE/COFF header of a kernel with an EFI stub: is there an Authenticode signature?

Kernels built with an EFI stub are PE files, and a distribution signs them (sbsign) by appending a
certificate table that the PE header's security data directory points at.  kexec_file_load checks
that signature when the host requires it (kimage_validate_signature -> verify_pefile_signature);
a kernel without one is then refused with EPERM/ENODATA long after we could have said why.  This
reads just enough of the header (PE/COFF specification, "Optional Header Data Directories") to
tell, without copying the image.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

MZ = b"MZ"
PE_SIGNATURE = b"PE\0\0"
PE32 = 0x10B
PE32_PLUS = 0x20B
#: Index of the certificate table (IMAGE_DIRECTORY_ENTRY_SECURITY) among the data directories.
SECURITY_DIRECTORY = 4


def security_directory(buf):
    """(file offset, size) of the certificate table, or None when ``buf`` has no PE header or no
    table.  Never raises: a malformed header simply has no signature."""
    view = memoryview(buf)
    try:
        if len(view) < 0x40 or bytes(view[:2]) != MZ:
            return None
        pe = struct.unpack_from("<I", view, 0x3C)[0]
        if pe + 24 > len(view) or bytes(view[pe:pe + 4]) != PE_SIGNATURE:
            return None
        opt = pe + 24  # after the signature and the 20-byte COFF file header
        size_of_optional = struct.unpack_from("<H", view, pe + 20)[0]
        if opt + 2 > len(view):
            return None
        magic = struct.unpack_from("<H", view, opt)[0]
        if magic == PE32_PLUS:
            count_at, dirs_at = opt + 108, opt + 112
        elif magic == PE32:
            count_at, dirs_at = opt + 92, opt + 96
        else:
            return None
        if count_at + 4 > len(view) or dirs_at - opt > size_of_optional:
            return None
        count = struct.unpack_from("<I", view, count_at)[0]
        entry = dirs_at + 8 * SECURITY_DIRECTORY
        if count <= SECURITY_DIRECTORY or entry + 8 > len(view) or entry + 8 - opt > size_of_optional:
            return None
        offset, size = struct.unpack_from("<II", view, entry)
        if not size or offset + size > len(view):
            return None
        return offset, size
    finally:
        view.release()


def is_signed(buf):
    """True when the PE image carries a certificate table (what kexec_file_load verifies)."""
    return security_directory(buf) is not None
