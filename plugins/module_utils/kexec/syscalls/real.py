# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The real kexec syscalls through libc's syscall(2), with ctypes.

Buffers are never copied: a segment's buffer is a writable mapping (``mmap.ACCESS_COPY``: private,
copy-on-write, nothing copied unless written) or a bytearray, whose address ctypes takes with
``c_char.from_buffer``.  Immutable ``bytes`` are passed by the address of their own storage (the
kernel only reads segment buffers); anything else read-only is copied once into a ctypes buffer.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno as _errno

from ..errors import SyscallError
from .base import Syscalls, segment_values
from .numbers import LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, SYSCALL_NUMBERS


class KexecSegment(ctypes.Structure):
    """struct kexec_segment from <uapi/linux/kexec.h>: {const void *buf; size_t bufsz;
    unsigned long mem; size_t memsz;}"""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("bufsz", ctypes.c_size_t),
        ("mem", ctypes.c_ulong),
        ("memsz", ctypes.c_size_t),
    ]


class _Pinned:
    """Addresses of segment buffers plus the ctypes objects that keep them valid.

    ``release()`` drops every export so the caller can close its mmaps afterwards (an mmap with a
    live ctypes export refuses to close).
    """

    def __init__(self):
        self.keep = []

    def address(self, buf, bufsz):
        if buf is None or bufsz == 0:
            return None
        if isinstance(buf, bytes):
            # Immutable: its storage cannot move while we hold a reference; the kernel only reads.
            ptr = ctypes.c_char_p(buf)
            self.keep.append((buf, ptr))
            return ctypes.cast(ptr, ctypes.c_void_p).value
        try:
            cell = ctypes.c_char.from_buffer(buf)
        except TypeError:
            # A read-only buffer that is not bytes (e.g. an ACCESS_READ mmap or a read-only
            # memoryview): one copy into a ctypes buffer.
            cell = (ctypes.c_char * bufsz).from_buffer_copy(memoryview(buf)[:bufsz])
        self.keep.append(cell)
        return ctypes.addressof(cell)

    def release(self):
        del self.keep[:]


class CtypesSyscalls(Syscalls):
    """The real syscalls through libc's syscall(2).  Only ever used on the lab's VMs and hosts
    being kexec'd on purpose: tests use FakeSyscalls."""

    def __init__(self, arch=None, host=None):
        super(CtypesSyscalls, self).__init__(arch, host)
        if self.arch not in SYSCALL_NUMBERS:
            raise SyscallError("kexec syscalls are not known for architecture %r; supported: %s"
                               % (self.arch, ", ".join(sorted(SYSCALL_NUMBERS))))
        self.nr_kexec_load, self.nr_kexec_file_load, self.nr_reboot = SYSCALL_NUMBERS[self.arch]
        self._libc = None

    def _syscall(self):
        if self._libc is None:
            # dlopen(NULL): libc is already in the process; find_library would run ldconfig.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            self._libc = libc
        return self._libc.syscall

    def _call(self, nr, *args):
        ctypes.set_errno(0)
        ret = self._syscall()(ctypes.c_long(nr), *args)
        if ret == -1:
            return ctypes.get_errno() or _errno.EIO
        return 0

    def _raw_kexec_load(self, entry, segments, flags):
        pinned = _Pinned()
        try:
            array = (KexecSegment * max(1, len(segments)))()
            for i, seg in enumerate(segments):
                buf, bufsz, mem, memsz = segment_values(seg)
                array[i].buf = pinned.address(buf, bufsz)
                array[i].bufsz = bufsz
                array[i].mem = mem
                array[i].memsz = memsz
            return self._call(self.nr_kexec_load, ctypes.c_ulong(entry), ctypes.c_ulong(len(segments)),
                              ctypes.byref(array) if segments else ctypes.c_void_p(None),
                              ctypes.c_ulong(flags))
        finally:
            pinned.release()

    def _raw_kexec_file_load(self, kernel_fd, initrd_fd, cmdline, flags):
        if self.nr_kexec_file_load is None:
            return _errno.ENOSYS
        if cmdline:
            text = ctypes.create_string_buffer(cmdline)  # NUL-terminated; length counts the NUL
            length, ptr = len(cmdline) + 1, ctypes.cast(text, ctypes.c_void_p)
        else:
            length, ptr = 0, ctypes.c_void_p(None)
        # Every argument travels as a full register-sized value; the kernel reads the low 32 bits
        # of the int ones.
        return self._call(self.nr_kexec_file_load, ctypes.c_long(kernel_fd), ctypes.c_long(initrd_fd),
                          ctypes.c_ulong(length), ptr, ctypes.c_ulong(flags))

    def _raw_reboot(self, cmd):
        self._libc_sync()
        return self._call(self.nr_reboot, ctypes.c_ulong(LINUX_REBOOT_MAGIC1),
                          ctypes.c_ulong(LINUX_REBOOT_MAGIC2), ctypes.c_ulong(cmd), ctypes.c_void_p(None))

    def _libc_sync(self):
        """Flush file systems before the jump, as kexec -e does: nothing else will."""
        self._syscall()  # loads libc
        self._libc.sync()
