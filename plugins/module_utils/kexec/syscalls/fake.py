# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A recording stand-in for the kexec syscalls: what unit tests drive the loader through."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno as _errno
import hashlib
import os

from .base import Syscalls, buffer_sha256, segment_values
from .numbers import KEXEC_FILE_ON_CRASH, KEXEC_FILE_UNLOAD, KEXEC_ON_CRASH, LINUX_REBOOT_CMD_KEXEC


class FakeSyscalls(Syscalls):
    """Records every call as plain values; tests drive the loader through it.

    ``calls`` is a list of dicts: {"call": "kexec_load", "entry", "flags", "segments": [{"mem",
    "memsz", "bufsz", "sha256"}]}, {"call": "kexec_file_load", "kernel_sha256", "initrd_sha256",
    "cmdline", "flags"}, {"call": "reboot", "cmd"}.  Failed calls are recorded too, with
    "errno".  ``fail(call, errno)`` makes the next such call (or the next ``times``) fail.
    ``loaded`` models /sys/kernel/kexec_loaded and kexec_crash_loaded.
    """

    def __init__(self, arch="x86_64", host=None, failures=None):
        super(FakeSyscalls, self).__init__(arch, host)
        self.calls = []
        self.loaded = {"normal": False, "crash": False}
        self._failures = {}
        for call, err in (failures or {}).items():
            self.fail(call, err)

    def fail(self, call, err, times=None):
        """Make ``call`` ('kexec_load', 'kexec_file_load', 'reboot') fail with ``err``; ``times``
        None means every time."""
        self._failures[call] = [err, times]
        return self

    def _failure(self, call):
        entry = self._failures.get(call)
        if not entry:
            return 0
        err, times = entry
        if times is not None:
            entry[1] = times - 1
            if entry[1] <= 0:
                del self._failures[call]
        return err

    def names(self):
        """Just the syscall names, in order."""
        return [c["call"] for c in self.calls]

    def _raw_kexec_load(self, entry, segments, flags):
        record = {"call": "kexec_load", "entry": entry, "flags": flags, "segments": []}
        for seg in segments:
            buf, bufsz, mem, memsz = segment_values(seg)
            record["segments"].append({"mem": mem, "memsz": memsz, "bufsz": bufsz,
                                       "sha256": buffer_sha256(buf, bufsz)})
        err = self._failure("kexec_load")
        if err:
            record["errno"] = err
        self.calls.append(record)
        if not err:
            self.loaded["crash" if flags & KEXEC_ON_CRASH else "normal"] = bool(segments)
        return err

    def _raw_kexec_file_load(self, kernel_fd, initrd_fd, cmdline, flags):
        record = {"call": "kexec_file_load", "flags": flags, "cmdline": cmdline.decode("utf-8", "replace"),
                  "kernel_sha256": _fd_sha256(kernel_fd), "initrd_sha256": _fd_sha256(initrd_fd)}
        err = self._failure("kexec_file_load")
        if err:
            record["errno"] = err
        self.calls.append(record)
        if not err:
            self.loaded["crash" if flags & KEXEC_FILE_ON_CRASH else "normal"] = not flags & KEXEC_FILE_UNLOAD
        return err

    def _raw_reboot(self, cmd):
        record = {"call": "reboot", "cmd": cmd}
        err = self._failure("reboot")
        if not err and cmd == LINUX_REBOOT_CMD_KEXEC and not self.loaded["normal"]:
            err = _errno.EINVAL  # kernel_kexec() with no image
        if err:
            record["errno"] = err
        self.calls.append(record)
        return err


def _fd_sha256(fd):
    """sha256 of a file descriptor's whole contents (None for -1), read with pread."""
    if fd is None or fd < 0:
        return None
    h = hashlib.sha256()
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            break
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()
