# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errno groups the loader decides by: which refusals may fall back to the other method, and
which mean a refused signature."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno as _errno

# Errnos that mean "this kernel cannot do kexec_file_load for this image" (not "you may not"):
# only these let method auto fall back from kexec_file_load to kexec_load.
ENOTSUP = getattr(_errno, "ENOTSUP", 95)
EOPNOTSUPP = getattr(_errno, "EOPNOTSUPP", 95)
FALLBACK_ERRNOS = frozenset([_errno.ENOSYS, _errno.EINVAL, _errno.ENOEXEC, ENOTSUP, EOPNOTSUPP])

EKEYREJECTED = getattr(_errno, "EKEYREJECTED", 129)
ENOKEY = getattr(_errno, "ENOKEY", 126)
EBADMSG = getattr(_errno, "EBADMSG", 74)
EKEYREVOKED = getattr(_errno, "EKEYREVOKED", 128)
EKEYEXPIRED = getattr(_errno, "EKEYEXPIRED", 127)
ENODATA = getattr(_errno, "ENODATA", 61)
ENOPKG = getattr(_errno, "ENOPKG", 65)
# The kernel's signature check (kimage_validate_signature -> verify_pefile_signature) fails with
# these; ENODATA is "the image carries no signature at all".
SIGNATURE_ERRNOS = frozenset([EKEYREJECTED, ENOKEY, EBADMSG, EKEYREVOKED, EKEYEXPIRED, ENODATA, ENOPKG])
