# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors a user can cause. Each says what was wrong and what to do.

Modules turn any KexecError into fail_json(msg=str(err)); the CLI prints it and exits 1.
Anything that is not a KexecError is a bug in the loader.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class KexecError(Exception):
    """Base of every error a user can cause; str(err) is the whole user-facing message."""


class HostError(KexecError):
    """The host's state (sysfs, procfs, memory map) cannot be read or makes the load impossible."""


class ImageFormatError(KexecError):
    """A kernel, initrd or ELF object is truncated, corrupted or of a format we do not load."""


class PlanError(KexecError):
    """The segments do not fit, or break a rule the kernel would enforce."""


class PurgatoryError(KexecError):
    """The purgatory object cannot be linked (missing symbol, relocation overflow, stale blob)."""


class UnsignedImageError(ImageFormatError):
    """The host requires a signed kernel for kexec_file_load and the image carries no signature."""


class SyscallError(KexecError):
    """The kernel refused a kexec syscall; the message names the errno and what to do."""

    def __init__(self, message, errno_value=None):
        super(SyscallError, self).__init__(message)
        self.errno = errno_value


class SignatureError(SyscallError):
    """The kernel refused the image's signature; never retried with another method."""
