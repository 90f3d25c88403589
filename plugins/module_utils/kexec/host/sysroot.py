# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One way to read the files of a host tree: the live ``/`` or a recorded copy of it.

Every host fact the loader uses (memory map, crash region, device tree, EFI state, crash notes)
is read through ``Sysroot``, so the same rules hold everywhere:

- only regular files are read: a FIFO, a device or a directory where a file should be is refused
  at once (opened non-blocking, so a FIFO can never hang the loader);
- every read is bounded: procfs and sysfs files are small, and a file larger than its bound is
  not what Linux writes there, so it is refused instead of filling memory;
- text must be UTF-8 and numbers must fit 64 bits before anything packs them.

Optional files that are missing or unreadable (root-only files when not root) read as None;
required ones raise HostError saying what to do.  Nothing here writes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat

from ..errors import HostError

#: Bound for an ordinary procfs/sysfs file (a command line, a flag, a number).
SMALL = 64 << 10
#: Bound for the long listings (/proc/iomem of a large server, /proc/meminfo, a kernel config).
LISTING = 8 << 20
#: Bound for a flattened device tree (/sys/firmware/fdt).
BLOB = 64 << 20

_U64 = (1 << 64) - 1


class Sysroot:
    """A host tree rooted at ``root`` ("/" for the running machine)."""

    def __init__(self, root="/"):
        self.root = root

    @property
    def live(self):
        """True when this is the running machine's own tree."""
        return os.path.abspath(self.root) == "/"

    def path(self, rel):
        """The path of ``rel`` (relative to the root) on this machine."""
        return os.path.join(self.root, rel.lstrip("/"))

    def isdir(self, rel):
        return os.path.isdir(self.path(rel))

    def exists(self, rel):
        return os.path.lexists(self.path(rel))

    def listdir(self, rel):
        """Sorted names in directory ``rel``, or None when it is missing or unreadable."""
        try:
            return sorted(os.listdir(self.path(rel)))
        except (IOError, OSError):
            return None

    def read_bytes(self, rel, limit=SMALL, required=False, hint=""):
        """At most ``limit`` bytes of file ``rel``; None when missing/unreadable (unless required).

        A file that is not a regular file, or holds more than ``limit`` bytes, raises HostError
        whether required or not: the tree is broken, and reading on could hang or exhaust memory.
        """
        path = self.path(rel)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except (IOError, OSError) as exc:
            if not required:
                return None
            raise HostError("cannot read %s (%s)%s" % (path, exc.strerror or exc, hint))
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise HostError("%s is %s, not a regular file; a host tree must hold the files Linux "
                                "provides there (record it again with scripts/record_sysroot.sh)"
                                % (path, _kind(mode)))
            chunks = []
            got = 0
            while got <= limit:
                try:
                    chunk = os.read(fd, min(1 << 20, limit + 1 - got))
                except (IOError, OSError) as exc:
                    if exc.errno == errno.EAGAIN:
                        break
                    if not required:
                        return None
                    raise HostError("cannot read %s (%s)%s" % (path, exc.strerror or exc, hint))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            if got > limit:
                raise HostError("%s holds more than %d bytes, more than Linux ever writes there; it is not "
                                "the file the kernel provides (record the host tree again)" % (path, limit))
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_head(self, rel, size):
        """The first ``size`` bytes of a large file (``/proc/kcore``); None when unreadable."""
        path = self.path(rel)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except (IOError, OSError):
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            try:
                return os.pread(fd, size, 0)
            except (IOError, OSError):
                return None
        finally:
            os.close(fd)

    def read_text(self, rel, limit=SMALL, required=False, hint=""):
        """File ``rel`` as UTF-8 text (None like read_bytes); HostError when it is not text."""
        data = self.read_bytes(rel, limit, required, hint)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise HostError("%s is not UTF-8 text; the file is corrupted or not what Linux writes there "
                            "(record the host tree again)" % self.path(rel))

    def read_int(self, rel, base=10):
        """File ``rel`` as a number in ``base`` that fits 64 bits (None when absent)."""
        text = self.read_text(rel)
        if text is None:
            return None
        return parse_u64(text.strip(), base, self.path(rel))

    def read_flag(self, rel):
        """File ``rel`` as a boolean (a number, 0 is false); None when absent."""
        value = self.read_int(rel)
        return None if value is None else bool(value)


def parse_u64(text, base, where):
    """``text`` as an unsigned 64-bit number in ``base`` (0: by prefix); HostError otherwise."""
    try:
        value = int(text, base)
    except ValueError:
        raise HostError("%s holds %r, not a number; the file is corrupted (record the host tree again)"
                        % (where, text[:40]))
    if not 0 <= value <= _U64:
        raise HostError("%s holds %r, which does not fit 64 bits; the file is corrupted (record the host tree "
                        "again)" % (where, text[:40]))
    return value


def _kind(mode):
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def as_sysroot(root):
    """A Sysroot for ``root`` (a path or a Sysroot already)."""
    return root if isinstance(root, Sysroot) else Sysroot(root)
