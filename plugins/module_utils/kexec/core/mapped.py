# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernels and initrds are mapped, never read into Python bytes.

A file is opened once, checked to be a regular, non-empty file of a sane size (non-blocking, so
a FIFO given as a kernel is refused instead of hanging), and mapped private copy-on-write
(``mmap.ACCESS_COPY``): writable for ctypes to take its address, never copied unless written
(only the test-only corruption hook writes, and it writes a copy).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import gc
import mmap
import os
import stat

from ..errors import ImageFormatError, KexecError

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode):
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _mib(n):
    return "%.1f MiB" % (n / float(1 << 20))


class MappedFile:
    """A file opened once and mapped private copy-on-write.

    ``max_size`` (bytes, optional) refuses a file larger than the host could ever load (more
    than its RAM) by its size, before anything is mapped.
    """

    def __init__(self, path, what, max_size=None):
        self.path = path
        self.what = what
        self.fd = None
        self.map = None
        self.size = 0
        try:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
            st = os.fstat(self.fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImageFormatError("%s %s is %s, not a regular file; pass the image file itself"
                                       % (what, path, _kind(st.st_mode)))
            if st.st_size == 0:
                raise ImageFormatError("%s %s is empty; pass a non-empty file (a truncated download or a "
                                       "failed build leaves empty files)" % (what, path))
            if max_size is not None and st.st_size > max_size:
                raise ImageFormatError("%s %s is %s, more than this host could load (%s); pass the right "
                                       "file" % (what, path, _mib(st.st_size), _mib(max_size)))
            self.size = st.st_size
            self.map = mmap.mmap(self.fd, 0, access=mmap.ACCESS_COPY)
        except OSError as e:
            self.close()
            if e.errno in (errno.ENOMEM, errno.EOVERFLOW, errno.EFBIG):
                raise ImageFormatError("%s %s (%s) cannot be mapped into memory: %s; it is far larger than "
                                       "a %s can be, pass the right file"
                                       % (what, path, _mib(self.size), e.strerror or e, what))
            hint = "check the path and permissions"
            if e.errno == errno.ENOENT:
                hint = "check the path (ls it on the host)"
            elif e.errno in (errno.EACCES, errno.EPERM):
                hint = "run as root (become: true) or fix the file's permissions"
            raise ImageFormatError("cannot read %s %s: %s; %s" % (what, path, e.strerror or e, hint))
        except KexecError:
            self.close()
            raise

    def close(self):
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:
                # A view still exports it (usually from a cycle); collect and retry, else it is
                # freed with the last view.
                gc.collect()
                try:
                    self.map.close()
                except BufferError:
                    pass
            self.map = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
