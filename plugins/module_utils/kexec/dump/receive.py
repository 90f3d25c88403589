# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dump server's side of a kdump over SSH: the one command a crashed host's key may run.

The kdump role puts the host's public key into the server's ``authorized_keys`` with
``restrict,command="python3 .../receive.py --dest DIR --keep N"``, so whatever the key asks for
(``SSH_ORIGINAL_COMMAND``) ends up here, and only two requests are served:

- ``check``: the destination exists and is writable; prints JSON (free space, makedumpfile);
- ``receive HOST STAMP``: stdin carries the dump in makedumpfile's flattened format (flat.py),
  then named files (``FILE dmesg.txt <size>\\n`` and the bytes) and ``DONE\\n``.  The vmcore is
  rebuilt by ``makedumpfile -R`` when the server has it, else by this script (same bytes), inside
  ``DIR/HOST-STAMP.incomplete/``, renamed to ``DIR/HOST-STAMP/`` only once everything arrived.
  A stream cut short, a silent sender, a full disk, a signal: the directory is removed, nothing
  half-written stays.  On success one JSON line (path, size) on stdout tells the sender.

Stdlib only, Python 3.8+; installed on the server beside flat.py, without the rest of the package.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys

try:
    from . import flat
except ImportError:  # installed alone on the dump server: flat.py is beside this file
    import flat  # pylint: disable=import-error

INCOMPLETE = ".incomplete"
HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d$")
#: A complete dump's name after "HOST-": the stamp, and a counter when two came in the same second.
DUMP_STAMP = re.compile(r"^\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d(-\d+)?$")
FILES = ("dmesg.txt", "capture-dmesg.txt")
#: A sender silent this long is gone (its connection may never close on its own).
IDLE_TIMEOUT = 300
DEFAULT_MIN_FREE = 64 << 20
MAX_FILE = 64 << 20


class ReceiveError(Exception):
    """The request is refused or the dump could not be taken; the message goes to the sender."""


def _fail_on_signal(signum, frame):
    raise ReceiveError("stopped by signal %d (the connection went away?)" % signum)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Input:
    """Reads the sender's stream with an idle timeout."""

    def __init__(self, fd, idle=IDLE_TIMEOUT):
        self.fd = fd
        self.idle = idle

    def read(self, n):
        ready = select.select([self.fd], [], [], self.idle)[0]
        if not ready:
            raise ReceiveError("the sender was silent for %d s" % self.idle)
        return os.read(self.fd, min(n, 1 << 20))

    def line(self, limit=256):
        out = b""
        while not out.endswith(b"\n"):
            c = self.read(1)
            if not c:
                raise ReceiveError("the stream ended before DONE")
            out += c
            if len(out) > limit:
                raise ReceiveError("a trailer line longer than %d bytes" % limit)
        return out[:-1].decode("ascii", "replace")

    def exact(self, n):
        parts, got = [], 0
        while got < n:
            data = self.read(n - got)
            if not data:
                raise ReceiveError("the stream ended inside a file (%d of %d bytes)" % (got, n))
            parts.append(data)
            got += len(data)
        return b"".join(parts)


class Writer:
    """Our own reassembly: every record written at its offset."""

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, offset, data):
        view = memoryview(data)
        while len(view):
            done = os.pwrite(self.fd, view, offset)
            view, offset = view[done:], offset + done

    def finish(self):
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None

    def abort(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Rearranger:
    """``makedumpfile -R``: the records relayed to its stdin as a fresh flattened stream."""

    def __init__(self, exe, path):
        self.proc = subprocess.Popen([exe, "-R", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.proc.stdin.write(flat.header())

    def write(self, offset, data):
        self.proc.stdin.write(flat.record(offset, data))

    def finish(self):
        self.proc.stdin.write(flat.end())
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        if self.proc.wait() != 0:
            tail = out.decode("utf-8", "replace").strip().splitlines()[-2:]
            return "makedumpfile -R exited %d: %s" % (self.proc.returncode, " / ".join(tail))
        return None

    def abort(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dumps_of(dest, host):
    """(complete, incomplete) directory names of ``host`` under ``dest``."""
    prefix = host + "-"
    complete, incomplete = [], []
    for name in os.listdir(dest):
        if not name.startswith(prefix) or not os.path.isdir(os.path.join(dest, name)):
            continue
        rest = name[len(prefix):]
        if rest.endswith(INCOMPLETE) and DUMP_STAMP.match(rest[:-len(INCOMPLETE)]):
            incomplete.append(name)
        elif DUMP_STAMP.match(rest):
            complete.append(name)
    return sorted(complete), sorted(incomplete)


def receive(dest, host, stamp, stream, keep=None, which=shutil.which, free_space=free_bytes, min_free=DEFAULT_MIN_FREE):
    """Take one dump from ``stream`` (an Input); returns {"path", "size", "rebuilt_by"}."""
    if not HOST.match(host) or not STAMP.match(stamp):
        raise ReceiveError("bad host or time stamp in the request: %r %r" % (host, stamp))
    if not os.path.isdir(dest):
        raise ReceiveError("%s does not exist on the dump server" % dest)
    # A receiver killed outright (SIGKILL, power loss) leaves its directory: this host only ever
    # sends one dump at a time, so whatever it left is dead.
    for name in _dumps_of(dest, host)[1]:
        shutil.rmtree(os.path.join(dest, name), ignore_errors=True)
    name, n = "%s-%s" % (host, stamp), 0
    while os.path.exists(os.path.join(dest, name)):
        n += 1
        name = "%s-%s-%d" % (host, stamp, n)
    work = os.path.join(dest, name + INCOMPLETE)
    os.mkdir(work, 0o700)
    sink = None
    try:
        vmcore = os.path.join(work, "vmcore")
        exe = which("makedumpfile")
        sink = Rearranger(exe, vmcore) if exe else Writer(vmcore)
        try:
            for offset, data in flat.records(stream.read):
                available = free_space(dest)
                if available - len(data) < min_free:
                    raise ReceiveError("not enough space on the dump server's %s: %d bytes free, %d kept free"
                                       % (dest, available, min_free))
                sink.write(offset, data)
        except flat.FlatError as err:
            raise ReceiveError(str(err))
        except (IOError, OSError) as err:
            raise ReceiveError("writing %s: %s" % (vmcore, err))
        error = sink.finish()
        sink = None
        if error:
            raise ReceiveError(error)
        size = os.path.getsize(vmcore) if os.path.exists(vmcore) else 0
        if size == 0:
            raise ReceiveError("the rebuilt vmcore is empty")
        while True:
            line = stream.line()
            if line == "DONE":
                break
            parts = line.split()
            if len(parts) != 3 or parts[0] != "FILE" or parts[1] not in FILES or not parts[2].isdigit() \
                    or int(parts[2]) > MAX_FILE:
                raise ReceiveError("unexpected trailer line %r" % line[:80])
            with open(os.path.join(work, parts[1]), "wb") as f:
                f.write(stream.exact(int(parts[2])))
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(work)
        final = os.path.join(dest, name)
        os.rename(work, final)
        _fsync_dir(dest)
    except BaseException:
        if sink is not None:
            sink.abort()
        shutil.rmtree(work, ignore_errors=True)
        raise
    pruned = []
    if keep:
        complete = [d for d in _dumps_of(dest, host)[0] if d != name]
        pruned = complete[:max(0, len(complete) + 1 - keep)]
        for old in pruned:
            shutil.rmtree(os.path.join(dest, old), ignore_errors=True)
    return {"path": os.path.join(dest, name), "size": size, "rebuilt_by": "makedumpfile -R" if exe else "fleetboot",
            "pruned": pruned}


def check(dest, which=shutil.which, free_space=free_bytes):
    """What the sender learns at enable time: the destination is there and writable."""
    if not os.path.isdir(dest) or not os.access(dest, os.W_OK | os.X_OK):
        raise ReceiveError("%s is not a writable directory on the dump server" % dest)
    return {"dest": dest, "free_bytes": free_space(dest), "makedumpfile": which("makedumpfile")}


def main(argv=None, environ=None, stdin_fd=0, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    environ = os.environ if environ is None else environ
    ap = argparse.ArgumentParser(prog="fleetboot-kdump-receive")
    ap.add_argument("--dest", required=True)
    ap.add_argument("--keep", type=int, default=None)
    ap.add_argument("--min-free", type=int, default=DEFAULT_MIN_FREE)
    args = ap.parse_args(argv)
    request = environ.get("SSH_ORIGINAL_COMMAND", "").split()
    try:
        if request == ["check"]:
            result = check(args.dest)
        elif len(request) == 3 and request[0] == "receive":
            for signum in (signal.SIGHUP, signal.SIGTERM):
                signal.signal(signum, _fail_on_signal)
            result = receive(args.dest, request[1], request[2], Input(stdin_fd), keep=args.keep,
                             min_free=args.min_free)
        else:
            raise ReceiveError("refused: this key may only send kdump dumps (check | receive HOST STAMP), not %r"
                               % " ".join(request)[:80])
    except ReceiveError as e:
        err.write("fleetboot-kdump-receive: %s\n" % e)
        return 1
    out.write(json.dumps(result, sort_keys=True) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
