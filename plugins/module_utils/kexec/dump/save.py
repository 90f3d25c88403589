# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Save a crash dump from the capture kernel: ``fleetboot-kexec save-vmcore`` and ``dmesg``.

After a panic the capture kernel exposes the crashed kernel's memory as ``/proc/vmcore``; a
systemd unit runs ``save-vmcore``, which writes ``<dest>/<UTC time>.incomplete/vmcore``,
``dmesg.txt`` (the crashed kernel's log) and ``capture-dmesg.txt`` (its own) and only then renames
the directory to ``<dest>/<UTC time>``: a directory without the suffix is always a complete dump.

The vmcore is written by ``makedumpfile`` when it is installed (it drops the page types the dump
level names and compresses with the best method the build has, see makedumpfile.py; the free space
is watched while it writes), else by our own sparse copy: zero 4 KiB blocks become holes, the free
space of the destination is checked before and during the copy, and the result's size is verified.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import shutil
import subprocess
import time

from ..arch import vmcore_memory
from ..errors import KexecError
from . import makedumpfile as _mdf
from . import printk as _printk
from . import DEFAULT_DEST, DEFAULT_DUMP_LEVEL, DEFAULT_VMCORE, MAKEDUMPFILE_MODES


class CaptureError(KexecError):
    """The dump cannot be saved (no /proc/vmcore, no space, makedumpfile failed...)."""


#: The capture kernel's own log (where it ran, what it found), saved beside the crashed kernel's.
KMSG = "/dev/kmsg"
BLOCK = 4096
CHUNK = 8 << 20
# Leave this much free on the destination: the system boots from it after the dump.
DEFAULT_MIN_FREE = 64 << 20
INCOMPLETE = ".incomplete"
_DUMP_NAME = re.compile(r"^\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d(-\d+)?$")
_ZERO_BLOCK = bytes(BLOCK)


def free_bytes(path):
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _no_space(dest, needed, available, done, total, min_free):
    return CaptureError("not enough space on %s for the dump: %d bytes needed, %d available (%d of %d bytes "
                        "copied, %d kept free); free space there, choose another --dest, or install makedumpfile, "
                        "which filters and compresses" % (dest, needed, available, done, total, min_free))


def _write_all(fd, view):
    while len(view):
        view = view[os.write(fd, view):]


def _nonzero_runs(chunk):
    """(start, end) byte ranges of ``chunk`` made of 4 KiB blocks that are not all zeros."""
    runs, start, length = [], None, len(chunk)
    for pos in range(0, length, BLOCK):
        zero = chunk[pos:pos + BLOCK] == _ZERO_BLOCK[:min(BLOCK, length - pos)]
        if zero and start is not None:
            runs.append((start, pos))
            start = None
        elif not zero and start is None:
            start = pos
    if start is not None:
        runs.append((start, length))
    return runs


def _read_full(fd, size):
    # /proc/vmcore may return short reads; keep reading so blocks stay 4 KiB aligned.
    parts, got = [], 0
    while got < size:
        data = os.read(fd, size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def sparse_copy(src, dst, free_space=free_bytes, min_free=DEFAULT_MIN_FREE, chunk_size=CHUNK):
    """Copy ``src`` to the new file ``dst``, leaving all-zero 4 KiB blocks as holes.

    Returns ``{"size", "bytes_written"}``.  Raises CaptureError when the destination lacks space
    (checked before the copy and before every write, leaving ``min_free`` bytes) or when the copy
    does not come out at the source's size; the caller removes the partial file.
    """
    dest_dir = os.path.dirname(os.path.abspath(dst))
    sfd = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(sfd).st_size
        available = free_space(dest_dir)
        # Zero pages become holes, so the worst case (the full size) is not required up front;
        # but a destination that cannot take even one chunk is refused before anything is written.
        if available - min_free < min(size, chunk_size):
            raise _no_space(dest_dir, min(size, chunk_size) + min_free, available, 0, size, min_free)
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            offset = written = 0
            while True:
                chunk = _read_full(sfd, chunk_size)
                if not chunk:
                    break
                runs = _nonzero_runs(chunk)
                needed = sum(end - start for start, end in runs)
                if needed:
                    available = free_space(dest_dir)
                    if available - min_free < needed:
                        raise _no_space(dest_dir, needed + min_free, available, offset, size, min_free)
                view = memoryview(chunk)
                for start, end in runs:
                    os.lseek(dfd, offset + start, os.SEEK_SET)  # skipped blocks stay holes
                    try:
                        _write_all(dfd, view[start:end])
                    except OSError as err:
                        if err.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise _no_space(dest_dir, needed + min_free, free_space(dest_dir), offset, size, min_free)
                        raise
                written += needed
                offset += len(chunk)
            if offset != size:
                raise CaptureError("%s ended after %d bytes but reports %d: the dump would be incomplete" % (src, offset, size))
            os.ftruncate(dfd, size)  # a trailing hole still counts in the file's size
            os.fsync(dfd)
            got = os.fstat(dfd).st_size
            if got != size:
                raise CaptureError("the copy %s has %d bytes, the source %d" % (dst, got, size))
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    return {"size": size, "bytes_written": written}


def _makedumpfile(exe, src, dst, dump_level, compression, free_space, min_free, run):
    """Write ``dst`` with makedumpfile; (report fields, error or None).  Raises CaptureError when
    the destination ran out of space: the sparse copy would need more still."""
    tool = _mdf.probe(exe, run)
    if tool is None:
        return {}, "%s -v did not run or printed no version: not a usable makedumpfile" % exe
    name, flag, note = _mdf.choose_compression(tool["compressions"], compression)
    dest_dir = os.path.dirname(os.path.abspath(dst))
    available = free_space(dest_dir)
    if available - min_free < CHUNK:
        raise _no_space(dest_dir, CHUNK + min_free, available, 0, os.path.getsize(src), min_free)
    try:
        error = _mdf.write_file(_mdf.dump_argv(exe, src, dump_level, flag, dst), dst, free_space, min_free)
    except _mdf.SpaceExhausted as full:
        raise CaptureError("not enough space on %s for the dump: makedumpfile was stopped after writing %d bytes "
                           "with %d bytes left (%d kept free); free space there or choose another --dest"
                           % (dest_dir, full.args[0], full.args[1], min_free))
    return {"makedumpfile_version": tool["version"], "compression": name, "compression_note": note}, error


def _dmesg_text(src, which, run, makedumpfile=None, workdir=None):
    """(text, source, error) for dmesg.txt: makedumpfile --dump-dmesg when it wrote the dump, else
    vmcore-dmesg when installed, else our own reader."""
    errors = []
    if makedumpfile:
        text, error = _mdf.read_dmesg(makedumpfile, src, workdir, run)
        if text is not None:
            return text, "makedumpfile", None
        errors.append(error)
    exe = which("vmcore-dmesg")
    if exe:
        try:
            proc = run([exe, src], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if proc.returncode == 0 and proc.stdout:
                return proc.stdout.decode("utf-8", "replace"), "vmcore-dmesg", None
            errors.append("vmcore-dmesg exited %d" % proc.returncode)
        except OSError as err:
            errors.append("cannot run vmcore-dmesg: %s" % err)
    try:
        return _printk.kernel_log(src, vmcore_memory)["dmesg"], "fleetboot", "; ".join(errors) or None
    except KexecError as err:
        errors.append(str(err))
    reason = "; ".join(errors)
    return "the kernel log could not be read from %s: %s\n" % (src, reason), "none", reason


def read_kmsg(path):
    """The running kernel's own log as dmesg prints it, from /dev/kmsg (records "prio,seq,usec,flags;text");
    (text, error).  Non-blocking: the device answers EAGAIN at the end of the log."""
    lines = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        return "", "cannot open %s: %s" % (path, err.strerror or err)
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except OSError as err:
                if err.errno == errno.EAGAIN:
                    break
                if err.errno == errno.EPIPE:  # records overwritten while reading: go on with the next
                    continue
                return "".join(lines), "reading %s: %s" % (path, err.strerror or err)
            if not record:
                break
            for line in record.decode("utf-8", "replace").splitlines():
                head, sep, text = line.partition(";")
                fields = head.split(",")
                if not sep or len(fields) < 3 or not fields[2].isdigit():
                    continue  # continuation lines (" KEY=value") and anything else
                usec = int(fields[2])
                lines.append("[%5d.%06d] %s\n" % (usec // 1000000, usec % 1000000, text))
    finally:
        os.close(fd)
    return "".join(lines), None


def _write_text(path, text):
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unique_name(dest, stamp):
    name, n = stamp, 0
    while os.path.exists(os.path.join(dest, name)) or os.path.exists(os.path.join(dest, name + INCOMPLETE)):
        n += 1
        name = "%s-%d" % (stamp, n)
    return name


def complete_dumps(dest):
    """Names of the complete dumps in ``dest``, oldest first (names sort by time)."""
    try:
        names = os.listdir(dest)
    except OSError:
        return []
    return sorted(n for n in names if _DUMP_NAME.match(n) and os.path.isdir(os.path.join(dest, n)))


def prune(dest, keep, protect=None):
    """Remove the oldest complete dumps beyond ``keep`` (never ``protect``); returns the removed names."""
    dumps = [n for n in complete_dumps(dest) if n != protect]
    excess = len(dumps) + (1 if protect else 0) - keep
    removed = dumps[:max(0, excess)]
    for name in removed:
        shutil.rmtree(os.path.join(dest, name))
    return removed


def save_vmcore(vmcore=DEFAULT_VMCORE, dest=DEFAULT_DEST, makedumpfile="auto", dump_level=DEFAULT_DUMP_LEVEL,
                keep=None, free_space=free_bytes, which=shutil.which, run=subprocess.run, clock=time.time,
                min_free=DEFAULT_MIN_FREE, chunk_size=CHUNK, kmsg=None, compression="auto"):
    """Save ``vmcore`` and its kernel log under ``dest``; returns a plain dict describing the dump.

    ``capture-dmesg.txt`` beside them holds the capture kernel's own log (``kmsg``): where it ran
    and what it found, for when the capture boot itself needs explaining.

    ``makedumpfile``: ``auto`` uses it when installed (falling back to the sparse copy when it
    fails for any reason but space), ``always`` requires it, ``never`` always copies; ``compression``
    is one of makedumpfile.COMPRESSIONS.  ``keep=N`` then removes the oldest complete dumps beyond N.
    ``free_space``, ``which``, ``run`` and ``clock`` are for tests.
    """
    started = clock()
    if makedumpfile not in MAKEDUMPFILE_MODES:
        raise CaptureError("makedumpfile must be one of %s, not %r" % (", ".join(MAKEDUMPFILE_MODES), makedumpfile))
    if compression not in _mdf.COMPRESSIONS:
        raise CaptureError("compression must be one of %s, not %r" % (", ".join(_mdf.COMPRESSIONS), compression))
    if keep is not None and keep < 1:
        raise CaptureError("keep must be at least 1 (the dump just written is always kept), not %d" % keep)
    if not 0 <= dump_level <= 31:
        raise CaptureError("the dump level is a makedumpfile -d bitmask from 0 to 31, not %d" % dump_level)
    if not os.path.exists(vmcore):
        raise CaptureError("%s does not exist: not running in a capture kernel (save-vmcore runs after a crash, "
                           "in the kdump kernel)" % vmcore)
    exe = which("makedumpfile") if makedumpfile != "never" else None
    if makedumpfile == "always" and not exe:
        raise CaptureError("makedumpfile is not installed (install it, or use --makedumpfile auto|never)")
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as err:
        raise CaptureError("cannot create %s: %s" % (dest, err.strerror or err))
    name = _unique_name(dest, time.strftime("%Y-%m-%d-%H:%M:%S", time.gmtime(started)))
    work = os.path.join(dest, name + INCOMPLETE)
    os.mkdir(work, 0o700)
    report = {"path": os.path.join(dest, name), "vmcore": vmcore, "makedumpfile_error": None, "compression": None}
    try:
        out = os.path.join(work, "vmcore")
        failure = None
        if exe:
            fields, failure = _makedumpfile(exe, vmcore, out, dump_level, compression, free_space, min_free, run)
            report.update(fields)
        if exe and failure is None:
            report.update(method="makedumpfile", dump_level=dump_level, source_size=os.path.getsize(vmcore),
                          bytes_written=os.path.getsize(out))
        else:
            if failure is not None:
                if makedumpfile == "always":
                    raise CaptureError(failure)
                report.update(makedumpfile_error=failure, compression=None)
                if os.path.exists(out):
                    os.unlink(out)
            copied = sparse_copy(vmcore, out, free_space=free_space, min_free=min_free, chunk_size=chunk_size)
            report.update(method="sparse-copy", source_size=copied["size"], bytes_written=copied["bytes_written"])
        st = os.stat(out)
        report["size"] = st.st_size
        report["disk_bytes"] = st.st_blocks * 512
        reader = exe if report["method"] == "makedumpfile" else None
        text, source, error = _dmesg_text(vmcore, which, run, reader, work)
        _write_text(os.path.join(work, "dmesg.txt"), text)
        report["dmesg_source"] = source
        report["dmesg_error"] = error
        own, report["capture_dmesg_error"] = read_kmsg(kmsg or KMSG)
        _write_text(os.path.join(work, "capture-dmesg.txt"), own)
        _fsync_dir(work)
        os.rename(work, report["path"])
        _fsync_dir(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    report["pruned"] = prune(dest, keep, protect=name) if keep else []
    report["seconds"] = round(clock() - started, 3)
    return report
