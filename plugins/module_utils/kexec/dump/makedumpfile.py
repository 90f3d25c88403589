# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running ``makedumpfile``: what the installed one supports, its command lines, and a run that
cannot fill the disk.

makedumpfile drops the page types a dump level names (``-d 31``: zero, cache, private cache,
user and free pages) and compresses every page it keeps, so the size of its output is unknown
until it has finished.  The free space of the destination is therefore watched while it runs,
and it is stopped before it takes the space the host needs to boot (``min_free``).

Which compressions a build has is probed, never assumed: ``makedumpfile -v`` prints one line per
optional library (``lzo\\tenabled``, ``snappy\\tdisabled``, ``zstd\\tenabled``); zlib (``-c``)
is always built in.  Debian bookworm's 1.7.2 has lzo only, newer builds zstd too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import subprocess
import tempfile
import time

#: Compression by preference (best ratio and speed first) and its makedumpfile flag.
FLAGS = (("zstd", "-z"), ("lzo", "-l"), ("snappy", "-p"), ("zlib", "-c"))
COMPRESSIONS = ("auto",) + tuple(name for name, flag in FLAGS) + ("none",)
#: What ``auto`` picks from, in order: zstd, else lzo, else zlib (snappy is only taken by name).
AUTO_ORDER = ("zstd", "lzo", "zlib")
_VERSION = re.compile(r"makedumpfile:?\s+version\s+(\S+)")
_FEATURE = re.compile(r"^(\w+)\s+(enabled|disabled)\s*$")
#: Seconds between two looks at the destination's free space while makedumpfile writes.
WATCH_INTERVAL = 0.25


def parse_version_output(text):
    """``{"version", "compressions"}`` from ``makedumpfile -v`` output (str)."""
    version = None
    compressions = ["zlib"]
    for line in text.splitlines():
        m = _VERSION.search(line)
        if m and version is None:
            version = m.group(1)
            continue
        m = _FEATURE.match(line.strip())
        if m and m.group(2) == "enabled" and m.group(1) in dict(FLAGS):
            compressions.append(m.group(1))
    order = [name for name, flag in FLAGS]
    return {"version": version, "compressions": sorted(set(compressions), key=order.index)}


def probe(exe, run=subprocess.run):
    """What the makedumpfile at ``exe`` is: ``{"path", "version", "compressions"}``, or None when it
    does not run."""
    try:
        proc = run([exe, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    except OSError:
        return None
    text = (proc.stdout or b"").decode("utf-8", "replace")
    found = parse_version_output(text)
    if proc.returncode != 0 or found["version"] is None:
        return None
    found["path"] = exe
    return found


def choose_compression(compressions, wanted="auto"):
    """(name, flag, note): the compression to use given what the build has; a wanted one it lacks
    falls back to ``auto``'s choice with a note saying so (a dump is never lost over this)."""
    if wanted == "none":
        return "none", None, None
    flags = dict(FLAGS)
    note = None
    if wanted != "auto":
        if wanted in compressions:
            return wanted, flags[wanted], None
        note = "this makedumpfile has no %s support (it has %s)" % (wanted, ", ".join(compressions))
    for name in AUTO_ORDER:
        if name in compressions:
            return name, flags[name], note
    return "zlib", flags["zlib"], note


def dump_argv(exe, src, dump_level, flag, dst=None):
    """makedumpfile's command line: a kdump-compressed file ``dst``, or with ``dst`` None the
    flattened format on stdout (``-F``), for a stream to a dump server."""
    argv = [exe]
    if flag:
        argv.append(flag)
    argv += ["-d", str(dump_level)]
    if dst is None:
        return argv + ["-F", src]
    return argv + [src, dst]


def dmesg_argv(exe, src, dst):
    """makedumpfile's own reader of the crashed kernel's log."""
    return [exe, "--dump-dmesg", src, dst]


def _tail(data):
    lines = (data or b"").decode("utf-8", "replace").strip().splitlines()
    return " / ".join(line.strip() for line in lines[-3:] if line.strip()) or "no message"


class SpaceExhausted(Exception):
    """makedumpfile was stopped (or stopped itself) for want of space; args: (written, available)."""


def write_file(argv, dst, free_space, min_free, popen=subprocess.Popen, sleep=time.sleep):
    """Run ``argv`` (a dump_argv writing ``dst``) while watching the free space beside ``dst``.

    Returns None on success, or a one-line error.  Raises SpaceExhausted when the free space fell
    below ``min_free`` (makedumpfile is stopped then) or makedumpfile ran out of it itself.
    """
    where = os.path.dirname(os.path.abspath(dst))
    # Its progress lines go to a file, not a pipe: nobody reads a pipe while it runs, and a long
    # dump prints more than a pipe holds.
    with tempfile.TemporaryFile() as log:
        try:
            proc = popen(argv, stdout=log, stderr=log)
        except OSError as err:
            return "cannot run %s: %s" % (argv[0], err)
        short = None
        while proc.poll() is None:
            available = free_space(where)
            if available < min_free:
                short = available
                proc.kill()
                proc.wait()
                break
            sleep(WATCH_INTERVAL)
        log.seek(0)
        said = log.read()
    written = os.path.getsize(dst) if os.path.exists(dst) else 0
    if short is not None:
        raise SpaceExhausted(written, short)
    if proc.returncode != 0:
        message = _tail(said)
        if "No space left" in message or "Disk quota" in message:
            raise SpaceExhausted(written, free_space(where))
        return "%s exited %d: %s" % (argv[0], proc.returncode, message)
    if written == 0:
        return "%s exited 0 but wrote no dump" % argv[0]
    return None


def read_dmesg(exe, src, workdir, run=subprocess.run):
    """(text, error) of ``makedumpfile --dump-dmesg``; the file it writes lives in ``workdir`` only
    while it is read."""
    out = os.path.join(workdir, ".dmesg.makedumpfile")
    try:
        proc = run(dmesg_argv(exe, src, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            return None, "makedumpfile --dump-dmesg exited %d: %s" % (proc.returncode, _tail(proc.stderr or proc.stdout))
        with open(out, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        if not text.strip():
            return None, "makedumpfile --dump-dmesg wrote an empty log"
        return text, None
    except (OSError, IOError) as err:
        return None, "cannot run makedumpfile --dump-dmesg: %s" % err
    finally:
        if os.path.exists(out):
            os.unlink(out)
