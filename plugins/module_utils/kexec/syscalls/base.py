# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kexec syscalls behind one small interface: ``Syscalls`` holds everything but the raw calls
(argument marshalling rules, the unload conventions, the errno -> message mapping), so the real
implementation (real.py) and the recording fake (fake.py) fail identically.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..core.digest import sha256_hex
from ..errors import SyscallError
from .messages import error_for
from .numbers import (KEXEC_FILE_NO_INITRAMFS, KEXEC_FILE_ON_CRASH, KEXEC_FILE_UNLOAD, KEXEC_ON_CRASH,
                      LINUX_REBOOT_CMD_KEXEC, kexec_arch_flag, normalize_arch)


def segment_values(segment):
    """(buf, bufsz, mem, memsz) of a segment: a plan Segment, any object with those attributes,
    or a 4-tuple.  bufsz defaults to len(buf), memsz to bufsz."""
    if isinstance(segment, tuple):
        buf, bufsz, mem, memsz = segment
    else:
        buf = getattr(segment, "buf", None)
        bufsz = getattr(segment, "bufsz", None)
        mem = getattr(segment, "mem", 0)
        memsz = getattr(segment, "memsz", None)
    if bufsz is None:
        bufsz = len(buf) if buf is not None else 0
    if memsz is None:
        memsz = bufsz
    if buf is None and bufsz:
        raise SyscallError("segment at 0x%x has bufsz %d but no buffer: a loader bug, please report it"
                           % (mem or 0, bufsz))
    if buf is not None and bufsz > len(buf):
        raise SyscallError("segment at 0x%x: bufsz %d exceeds its buffer (%d bytes): a loader bug, "
                           "please report it" % (mem or 0, bufsz, len(buf)))
    return buf, bufsz, mem or 0, memsz


def buffer_sha256(buf, bufsz=None):
    """Hex sha256 of the first ``bufsz`` bytes of ``buf`` (all of it by default), without copying."""
    return sha256_hex(buf, bufsz)


class Syscalls:
    """kexec_load, kexec_file_load, unload and reboot(KEXEC).

    Subclasses implement the ``_raw_*`` methods, which return 0 or an errno and never raise for
    a refusal; everything else (flags, unload conventions, messages) lives here once.  ``host``
    (optional, set by the loader) only refines error messages.
    """

    def __init__(self, arch=None, host=None):
        self.arch = normalize_arch(arch)
        self.host = host

    def _fail(self, op, err):
        raise error_for(op, err, self.host)

    def kexec_load(self, entry, segments, flags):
        """Load ``segments`` (plan Segments or (buf, bufsz, mem, memsz)) to start at ``entry``."""
        segments = list(segments)
        err = self._raw_kexec_load(entry, segments, flags)
        if err:
            self._fail("kexec_load", err)

    def kexec_file_load(self, kernel_fd, initrd_fd, cmdline, flags):
        """Let the kernel load the image from ``kernel_fd`` (initrd_fd -1 for none)."""
        if initrd_fd is None or initrd_fd < 0:
            initrd_fd = -1
            if not flags & KEXEC_FILE_UNLOAD:
                flags |= KEXEC_FILE_NO_INITRAMFS
        if isinstance(cmdline, str):
            cmdline = cmdline.encode("utf-8")
        cmdline = bytes(cmdline or b"")
        if b"\0" in cmdline:
            raise SyscallError("kexec_file_load: the command line contains a NUL byte; remove it.")
        err = self._raw_kexec_file_load(kernel_fd, initrd_fd, cmdline, flags)
        if err:
            self._fail("kexec_file_load", err)

    def unload(self, crash=False, method="classic"):
        """Unload the normal (or crash) image: kexec_load with no segments, or kexec_file_load
        with KEXEC_FILE_UNLOAD (the only way under lockdown, which refuses kexec_load)."""
        if method == "file":
            flags = KEXEC_FILE_UNLOAD | (KEXEC_FILE_ON_CRASH if crash else 0)
            err = self._raw_kexec_file_load(-1, -1, b"", flags)
            if err:
                self._fail("kexec_file_load(KEXEC_FILE_UNLOAD)", err)
        else:
            flags = kexec_arch_flag(self.arch) | (KEXEC_ON_CRASH if crash else 0)
            err = self._raw_kexec_load(0, [], flags)
            if err:
                self._fail("kexec_load(unload)", err)

    def reboot_kexec(self):
        """Jump into the loaded image (reboot(LINUX_REBOOT_CMD_KEXEC)); returns only on failure
        or after a preserve_context image jumped back."""
        err = self._raw_reboot(LINUX_REBOOT_CMD_KEXEC)
        if err:
            self._fail("reboot", err)

    # raw calls: return 0 or an errno
    def _raw_kexec_load(self, entry, segments, flags):
        raise NotImplementedError

    def _raw_kexec_file_load(self, kernel_fd, initrd_fd, cmdline, flags):
        raise NotImplementedError

    def _raw_reboot(self, cmd):
        raise NotImplementedError
