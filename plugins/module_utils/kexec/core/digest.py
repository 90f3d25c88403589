# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sha256 of segment buffers, without keeping a mapped file's pages resident.

Kernels and initrds are mmapped (ACCESS_COPY) so they are never copied, but hashing a mapping
faults every page in, and mapped file pages count in the process's resident set: a 64 MiB
initrd would add 64 MiB to the loader's peak memory. So the buffer is hashed in chunks and,
when it is a view of a private file mapping, each chunk's pages are given back with
madvise(MADV_DONTNEED) once hashed. For a private mapping that nobody wrote, that only drops
the process's reference: the next access faults the same bytes in again from the page cache.
The loader never writes into its file mappings (the test-only corruption hook works on a copy),
which is what makes this safe.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import hashlib
import mmap
import threading

CHUNK = 1 << 20
PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4

_libc = None


def _madvise():
    """libc's madvise, or None where ctypes cannot reach it (then pages simply stay mapped)."""
    global _libc  # pylint: disable=global-statement
    if _libc is None:
        try:
            # dlopen(NULL): libc is already in the process; find_library would run ldconfig.
            lib = ctypes.CDLL(None, use_errno=True)
            fn = lib.madvise
            fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            fn.restype = ctypes.c_int
            _libc = fn
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def byte_view(buf):
    """A flat unsigned-byte memoryview of any buffer (no copy)."""
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1 or view.format != "B":
        view = view.cast("B")
    return view


def _is_file_mapping(view):
    return isinstance(view.obj, mmap.mmap) and not view.readonly


def _release_pages(chunk):
    """Drop the whole pages inside ``chunk`` (a writable view of a private mapping) from RSS."""
    madvise = _madvise()
    if madvise is None or len(chunk) < PAGE:
        return
    holder = ctypes.c_char.from_buffer(chunk)
    try:
        start = ctypes.addressof(holder)
        first = (start + PAGE - 1) // PAGE * PAGE
        last = (start + len(chunk)) // PAGE * PAGE
        if last > first:
            madvise(first, last - first, MADV_DONTNEED)
    finally:
        del holder


def update(hashers, buf, length=None):
    """Feed the first ``length`` bytes of ``buf`` (all by default) to every hasher in ``hashers``."""
    view = byte_view(buf)
    try:
        end = len(view) if length is None else min(length, len(view))
        release = _is_file_mapping(view) and end > CHUNK
        pos = 0
        while pos < end:
            chunk = view[pos:min(pos + CHUNK, end)]
            for h in hashers:
                h.update(chunk)
            if release:
                _release_pages(chunk)
            chunk.release()
            pos += CHUNK
    finally:
        view.release()


def sha256_hex(buf, length=None):
    """Hex sha256 of the first ``length`` bytes of ``buf`` (all of it by default)."""
    h = hashlib.sha256()
    if buf is not None:
        update((h,), buf, length)
    return h.hexdigest()


#: Buffers smaller than this are hashed in the calling thread: a thread costs more than they do.
PARALLEL_MIN = 1 << 20


def sha256_many(items):
    """Hex sha256 of each (buf, length) of ``items`` (length None: the whole buffer), in order.

    The large ones are hashed at the same time, one thread each: hashlib releases the GIL while it
    hashes, so a kernel and an initrd take the time of the larger one on two cores.
    """
    items = list(items)
    results = [None] * len(items)
    errors = []

    def work(i, buf, length):
        try:
            results[i] = sha256_hex(buf, length)
        except BaseException as err:  # pylint: disable=broad-except  # re-raised in the caller
            errors.append(err)

    threads = []
    for i, (buf, length) in enumerate(items):
        size = len(byte_view(buf)) if length is None else length
        if size >= PARALLEL_MIN:
            t = threading.Thread(target=work, args=(i, buf, length))
            t.start()
            threads.append(t)
        else:
            work(i, buf, length)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
