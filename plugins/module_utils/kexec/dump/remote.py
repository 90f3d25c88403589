# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Send a crash dump to a dump server over SSH from the capture kernel, else save it locally.

The dump leaves as one stream through ``ssh`` to the server's receiver (receive.py, the forced
command of the host's key there): makedumpfile's flattened output (``-F``) when makedumpfile is
installed, else our sparse copy in the same format (only non-zero blocks), then ``dmesg.txt`` and
``capture-dmesg.txt``. The receiver rebuilds the file in ``<path>/<host>-<UTC time>.incomplete/``
and renames it when everything has arrived; it answers with one JSON line, and only that answer makes the remote dump
count.  Nothing is written on the host while the stream runs.

The capture kernel brings the network up with the host's own configuration, which may take a
moment: the server is asked (``check``) until it answers or ``wait`` seconds have passed.  When it
does not answer, or the stream fails, the dump is saved locally as save-vmcore would (save.py) and
the log says why.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess
import tempfile
import time

from . import flat
from . import makedumpfile as _mdf
from . import save as _save

#: Seconds each ssh attempt may take to connect.
CONNECT_TIMEOUT = 10
#: Seconds between two attempts to reach the server while the network comes up.
RETRY_INTERVAL = 3
#: Seconds to wait for the server's answer once the whole stream is sent (it fsyncs, renames).
ANSWER_TIMEOUT = 120


class SshTarget:
    """Where and how to reach the dump server (a plain value)."""

    def __init__(self, server, user="root", port=22, key=None, known_hosts=None, host_name=None, wait=60):
        self.server = server
        self.user = user
        self.port = int(port)
        self.key = key
        self.known_hosts = known_hosts
        self.host_name = host_name or os.uname()[1].split(".")[0]
        self.wait = wait

    def describe(self):
        return "%s@%s:%d" % (self.user, self.server, self.port)

    def argv(self, request):
        """ssh's command line for one request to the receiver (``check`` or ``receive HOST STAMP``)."""
        argv = ["ssh", "-T", "-p", str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=%d" % CONNECT_TIMEOUT,
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
        if self.key:
            argv += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + self.known_hosts,
                     "-o", "GlobalKnownHostsFile=/dev/null"]
        return argv + ["%s@%s" % (self.user, self.server), request]


def _last_line(data):
    lines = (data or b"").decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


def reach(target, run=subprocess.run, clock=time.time, sleep=time.sleep, log=None):
    """The receiver's ``check`` answer (a dict); RuntimeError naming the last failure when the
    server does not answer within ``target.wait`` seconds."""
    deadline = clock() + max(0, target.wait)
    attempts, last = 0, "no attempt"
    while True:
        attempts += 1
        try:
            proc = run(target.argv("check"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=CONNECT_TIMEOUT + 20, check=False)
            if proc.returncode == 0:
                try:
                    return json.loads(_last_line(proc.stdout))
                except ValueError:
                    last = "the receiver answered %r, not JSON" % _last_line(proc.stdout)[:80]
            else:
                last = "ssh exited %d: %s" % (proc.returncode, _last_line(proc.stderr) or "no message")
        except subprocess.TimeoutExpired:
            last = "no answer within %d s" % (CONNECT_TIMEOUT + 20)
        except OSError as err:
            last = "cannot run ssh: %s" % err
            break
        if clock() + RETRY_INTERVAL > deadline:
            break
        if log and attempts == 1:
            log("fleetboot-kdump: dump server %s not answering yet (%s); trying again for up to %d s"
                % (target.describe(), last, target.wait))
        sleep(RETRY_INTERVAL)
    raise RuntimeError("%s (%d attempt%s in %d s)" % (last, attempts, "" if attempts == 1 else "s", target.wait))


def sparse_stream(path, chunk_size=_save.CHUNK):
    """Our sparse copy of ``path`` as a flattened stream (bytes chunks): a record per run of
    non-zero 4 KiB blocks, and the last byte always, so the rebuilt file has the full size."""
    yield flat.header()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        tail_written = False
        while True:
            chunk = _save._read_full(fd, chunk_size)  # pylint: disable=protected-access  # same package
            if not chunk:
                break
            view = memoryview(chunk)
            for start, stop in _save._nonzero_runs(chunk):  # pylint: disable=protected-access
                yield flat.record(offset + start, view[start:stop])
                tail_written = offset + stop == size
            offset += len(chunk)
        if offset != size:
            raise RuntimeError("%s ended after %d bytes but reports %d" % (path, offset, size))
        if size and not tail_written:
            yield flat.record(size - 1, b"\0")
    finally:
        os.close(fd)
    yield flat.end()


def _makedumpfile_stream(argv, errlog):
    """makedumpfile -F's stdout in chunks; RuntimeError when it fails."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errlog)
    try:
        while True:
            data = proc.stdout.read(1 << 20)
            if not data:
                break
            yield data
        if proc.wait() != 0:
            errlog.seek(0)
            raise RuntimeError("%s exited %d: %s" % (argv[0], proc.returncode, _last_line(errlog.read()) or "no message"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def send(target, stamp, stream, files, popen=subprocess.Popen):
    """Send ``stream`` (bytes chunks) and ``files`` ({name: bytes}) to the receiver; its answer
    (a dict) or RuntimeError."""
    with tempfile.TemporaryFile() as errors, tempfile.TemporaryFile() as answer:
        proc = popen(target.argv("receive %s %s" % (target.host_name, stamp)), stdin=subprocess.PIPE,
                     stdout=answer, stderr=errors)
        try:
            try:
                for data in stream:
                    proc.stdin.write(data)
                for name in sorted(files):
                    proc.stdin.write(("FILE %s %d\n" % (name, len(files[name]))).encode("ascii"))
                    proc.stdin.write(files[name])
                proc.stdin.write(b"DONE\n")
                proc.stdin.close()
            except (IOError, OSError) as err:
                proc.wait()
                errors.seek(0)
                raise RuntimeError("the stream to the dump server broke (%s): %s"
                                   % (err, _last_line(errors.read()) or "ssh exited %s" % proc.returncode))
            try:
                rc = proc.wait(timeout=ANSWER_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise RuntimeError("the dump server did not confirm the dump within %d s" % ANSWER_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        errors.seek(0)
        answer.seek(0)
        said, text = _last_line(errors.read()), _last_line(answer.read())
    if rc != 0:
        raise RuntimeError("the dump server refused the dump (ssh exited %d): %s" % (rc, said or "no message"))
    try:
        return json.loads(text)
    except ValueError:
        raise RuntimeError("the dump server answered %r, not the dump's JSON" % text[:80])


def save_remote(target, vmcore=_save.DEFAULT_VMCORE, dest=_save.DEFAULT_DEST, makedumpfile="auto",
                dump_level=_save.DEFAULT_DUMP_LEVEL, compression="auto", keep=None, log=None,
                which=shutil.which, run=subprocess.run, clock=time.time, sleep=time.sleep, kmsg=None):
    """Send the dump to ``target`` (SshTarget); on any failure save it under ``dest`` instead.
    Either way ``dmesg.txt`` (the crashed kernel's log) and ``capture-dmesg.txt`` (the capture
    kernel's own, from ``kmsg``) go with it.

    Returns the report: ``target`` (ssh or local), ``remote_error`` (why it is local), and the
    fields of a local save or of the remote dump (``server``, ``path`` on the server, ``size``).
    """
    log = log or (lambda message: None)
    started = clock()
    if makedumpfile == "always" and not which("makedumpfile"):
        raise _save.CaptureError("makedumpfile is not installed (install it, or use --makedumpfile auto|never)")
    if not os.path.exists(vmcore):
        raise _save.CaptureError("%s does not exist: not running in a capture kernel (save-vmcore runs after a crash, "
                                 "in the kdump kernel)" % vmcore)
    try:
        server = reach(target, run=run, clock=clock, sleep=sleep, log=log)
        log("fleetboot-kdump: dump server %s answers (%s free under %s)"
            % (target.describe(), _save_mib(server.get("free_bytes")), server.get("dest")))
        report = _stream(target, vmcore, makedumpfile, dump_level, compression, which, run, started, kmsg)
    except RuntimeError as err:
        reason = "dump server %s: %s" % (target.describe(), err)
        log("fleetboot-kdump: %s; saving the dump locally under %s instead" % (reason, dest))
        report = _save.save_vmcore(vmcore, dest, makedumpfile=makedumpfile, dump_level=dump_level, keep=keep,
                                   compression=compression, which=which, run=run, clock=clock, kmsg=kmsg)
        report.update(target="local", remote_error=reason, server=target.describe())
        return report
    report.update(target="ssh", remote_error=None, server=target.describe(), seconds=round(clock() - started, 3))
    log("fleetboot-kdump: dump saved on %s as %s (%d bytes)" % (target.describe(), report["path"], report["size"]))
    return report


def _save_mib(n):
    return "?" if n is None else "%.0f MiB" % (n / float(1 << 20))


def _stream(target, vmcore, makedumpfile, dump_level, compression, which, run, started, kmsg=None):
    stamp = time.strftime("%Y-%m-%d-%H:%M:%S", time.gmtime(started))
    exe = which("makedumpfile") if makedumpfile != "never" else None
    tool = _mdf.probe(exe, run) if exe else None
    if makedumpfile == "always" and not tool:
        raise RuntimeError("%s -v did not run: not a usable makedumpfile" % exe)
    report = {"vmcore": vmcore, "source_size": os.path.getsize(vmcore), "compression": None,
              "makedumpfile_error": None if tool or not exe else "%s -v did not run: not a usable makedumpfile" % exe}
    workdir = tempfile.mkdtemp(prefix="fleetboot-kdump.")
    try:
        text, source, error = _save._dmesg_text(vmcore, which, run, exe if tool else None, workdir)  # pylint: disable=protected-access
        own, own_error = _save.read_kmsg(kmsg or _save.KMSG)
        with tempfile.TemporaryFile() as errlog:
            if tool:
                name, flag, note = _mdf.choose_compression(tool["compressions"], compression)
                stream = _makedumpfile_stream(_mdf.dump_argv(exe, vmcore, dump_level, flag), errlog)
                report.update(method="makedumpfile", dump_level=dump_level, compression=name, compression_note=note,
                              makedumpfile_version=tool["version"])
            else:
                stream = sparse_stream(vmcore)
                report.update(method="sparse-copy")
            answer = send(target, stamp, stream, {"dmesg.txt": text.encode("utf-8"),
                                                  "capture-dmesg.txt": own.encode("utf-8")})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.update(path=answer.get("path"), size=answer.get("size"), rebuilt_by=answer.get("rebuilt_by"),
                  pruned=answer.get("pruned", []), dmesg_source=source, dmesg_error=error,
                  capture_dmesg_error=own_error)
    return report
