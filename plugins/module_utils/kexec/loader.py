# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Orchestration only: request -> host -> image -> plan -> purgatory -> check -> syscall.

Everything before the syscall only reads: files are opened and mapped once (core/mapped.py), the
architecture (arch/) builds the plan and links its purgatory, the plan is checked against the
kernel's rules.  Only then does one syscall (or, for method auto, at most one fallback, see
policy.py) touch the kernel, so any KexecError raised before it leaves the host as it was.

Test-only hook: ``FLEETBOOT_TEST_CORRUPT_SEGMENT=<what>`` (e.g. ``kernel``) flips one byte of that
segment (in a private copy) *after* purgatory recorded its digests, so the lab can prove purgatory
halts on a mismatch.  It exists for the lab's purgatory tests (tests/e2e/test_kexec_<arch>.py)
only; never set it otherwise.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno as _errno
import os
import sys

from . import arch as _arch
from .core.entropy import kernel_random
from .core.initramfs import check_initramfs, plain_prefix
from .cmdline import encode_cmdline
from .core.mapped import MappedFile
from .crash import sizing as _sizing
from .crash.fit import check_fits
from .errors import HostError, ImageFormatError, KexecError, PlanError, SignatureError, SyscallError
from .host import Host
from .policy import MethodError, choose_methods, classic_refusal, may_fall_back
from .syscalls import numbers as _nr
from .core.digest import sha256_many
from .syscalls.base import buffer_sha256

CORRUPT_ENV = "FLEETBOOT_TEST_CORRUPT_SEGMENT"


def _get(host, name, default=None):
    if host is None:
        return default
    if isinstance(host, dict):
        return host.get(name, default)
    return getattr(host, name, default)


# --------------------------------------------------------------------------------------------
# stages (the architecture's by default; tests may pass stand-ins)


class Stages:
    """The pipeline's steps, each delegated to the host's architecture package.

    ``entropy(n)`` is where the next kernel's RNG seed comes from: fresh bytes from the running
    kernel (core/entropy.py); tests that compare two plans byte for byte give a fixed source.
    """

    entropy = staticmethod(kernel_random)

    def read_host(self, sysroot):
        return Host.read(sysroot)

    def arch(self, host):
        return _arch.for_host(host)

    def new_plan(self, host, kind, method="classic"):
        return self.arch(host).new_plan(host, kind, method)

    def load_image(self, buf, initrd, cmdline, host, plan, crash=None):
        """Place the image's segments (probe, parse, boot data); ``crash`` is the CrashSetup."""
        return self.arch(host).load_image(buf, initrd, cmdline, host, plan, crash=crash, entropy=self.entropy)

    def check_file_load(self, buf, host):
        """What kexec_file_load demands of the image beyond what a kexec_load plan checks."""
        arch = self.arch(host)
        arch.check_file_load(arch.probe(buf), buf, host)

    def kernel_need(self, buf, host):
        """Bytes the kernel occupies once loaded (a bzImage's init_size, else the file's size)."""
        return self.arch(host).kernel_need(buf)

    def crash_setup(self, plan, host, cmdline):
        """Core header and whatever else the capture kernel needs (arch/<arch>/crash.py)."""
        return self.arch(host).prepare_crash(plan, host, cmdline)

    def link_purgatory(self, plan, image, host, crash=None):
        """Link purgatory over every segment already in ``plan``; sets plan.entry."""
        return self.arch(host).link_purgatory(plan, image, crash=crash)


DEFAULT_STAGES = Stages()


# --------------------------------------------------------------------------------------------
# what a plan reports


class FileSegment:
    """What kexec_file_load will load, for the plan's report (the kernel places it: mem None)."""

    def __init__(self, what, buf, sha256=None):
        self.what = what
        self.buf = buf
        self.bufsz = len(buf)
        self.memsz = len(buf)
        self.mem = None
        self._sha256 = sha256

    @property
    def sha256(self):
        if self._sha256 is None:
            self._sha256 = buffer_sha256(self.buf)
        return self._sha256


def _known_sha256(seg):
    """A segment's digest if it is already known (computed by purgatory linking, or given)."""
    value = getattr(seg, "_sha256", None)
    return value if isinstance(value, str) else None


def _remember(seg, hexdigest):
    remember = getattr(seg, "remember_sha256", None)
    if remember is not None and seg.bufsz == len(memoryview(seg.buf)):
        remember(hexdigest)
    elif isinstance(seg, FileSegment):
        seg._sha256 = hexdigest  # pylint: disable=protected-access


def _seg_sha256(seg):
    value = getattr(seg, "sha256", None)
    if callable(value):
        value = value()
    if value is None and getattr(seg, "buf", None) is not None:
        value = buffer_sha256(seg.buf, getattr(seg, "bufsz", None))
    return value


def segment_dict(seg, digest):
    return {"what": seg.what, "mem": seg.mem, "memsz": seg.memsz, "bufsz": seg.bufsz, "sha256": digest}


# --------------------------------------------------------------------------------------------
# planning


class Prepared:
    """Everything a load needs, ready for one syscall: a plain report (``to_dict()``) plus the
    open files behind the segments.  Use as a context manager; ``close()`` releases the files."""

    def __init__(self, request, method, methods, host):
        self.request = request
        self.method = method
        self.methods = methods
        self.host = host
        self.kind = request.kind
        self.cmdline = request.cmdline
        self.entry = 0
        self.flags = 0
        self.segments = []
        self.plan = None
        self.image = None
        self.kernel = None
        self.initrd = None
        self.warnings = []
        self.corrupted = None
        self.crash = None
        self._digests = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if tb is not None:
            _drop_views(tb)
        self.close()
        return False

    def close(self):
        # Drop our references to views over the maps first, so the maps can close.
        self.segments = []
        self.plan = None
        self.image = None
        for f in (self.initrd, self.kernel):
            if f is not None:
                f.close()
        self.kernel = self.initrd = None

    def digests(self):
        """sha256 of every segment, computed once (reads every page: what --dry-run does
        instead of the syscall)."""
        if self._digests is None or len(self._digests) != len(self.segments):
            # Whatever is not known yet is hashed at once, the large buffers in parallel.
            pending = [s for s in self.segments if _known_sha256(s) is None and getattr(s, "buf", None) is not None]
            for seg, hexdigest in zip(pending, sha256_many((s.buf, s.bufsz) for s in pending)):
                _remember(seg, hexdigest)
            self._digests = [_seg_sha256(s) for s in self.segments]
        return self._digests

    def save_segments(self, directory, report):
        """Write each segment's bytes (``bufsz`` of them; the zero fill up to ``memsz`` is not
        data) to ``directory``/NN-<what>.bin (.dtb for a device tree, so dtc opens it), and name
        the file in ``report``'s segments.  The directory is created; existing files of the same
        names are replaced, nothing else in it is touched."""
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory)
            for i, (seg, entry) in enumerate(zip(self.segments, report["segments"])):
                name = "%02d-%s.%s" % (i, "".join(c if c.isalnum() or c in "._-" else "_" for c in seg.what),
                                       "dtb" if seg.what in ("dtb", "fdt", "devicetree") else "bin")
                path = os.path.join(directory, name)
                with open(path + ".tmp", "wb") as f:
                    if seg.bufsz:
                        view = memoryview(seg.buf)
                        try:
                            f.write(view[:seg.bufsz] if view.ndim == 1 else view.tobytes()[:seg.bufsz])
                        finally:
                            view.release()
                os.replace(path + ".tmp", path)
                entry["file"] = path
        except (IOError, OSError) as err:
            raise KexecError("cannot write the segments to %s: %s; pass a writable directory"
                             % (directory, err.strerror or err))

    def to_dict(self, hash_all=True):
        """The plain report. ``hash_all`` False (after a real kexec_file_load) reports only the
        digests already known and None for the rest: the kernel reads and verifies those files
        itself, and hashing them again would only make the load slower."""
        digests = self.digests() if hash_all else [_known_sha256(s) for s in self.segments]
        segments = [segment_dict(seg, digest) for seg, digest in zip(self.segments, digests)]
        out = {"method": self.method, "kind": self.kind, "entry": self.entry, "flags": self.flags,
               "cmdline": self.cmdline, "segments": segments}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.corrupted:
            out["test_corrupted_segment"] = self.corrupted
        if self.crash is not None:
            out["crash"] = self.crash.to_dict()
        return out


def _drop_views(tb):
    """Clear the locals of the finished frames of an exception's traceback, so views over our
    mappings they hold die now and the mappings can close (the error message is unaffected)."""
    # traceback.clear_frames() does this, but importing traceback costs a load more than it saves.
    while tb is not None:
        try:
            tb.tb_frame.clear()
        except RuntimeError:  # a frame still executing (ours) cannot be cleared; it ends soon
            pass
        tb = tb.tb_next


def _kexec_flags(kind, arch):
    flags = _nr.kexec_arch_flag(arch)
    if kind == "crash":
        flags |= _nr.KEXEC_ON_CRASH
    return flags


def _corrupt(segments, what):
    """Test-only: replace segment ``what`` by a copy with one byte flipped in the middle."""
    for seg in segments:
        if seg.what != what:
            continue
        if not seg.bufsz:
            raise KexecError("%s=%s: that segment has no data to corrupt" % (CORRUPT_ENV, what))
        # Always a copy: the loader never writes into its file mappings (digest.py relies on it).
        view = memoryview(seg.buf)
        copy = bytearray(view[:seg.bufsz].tobytes() if view.ndim == 1 else view.tobytes())
        view.release()
        seg.set_buffer(copy)  # forgets the segment's own digest; purgatory keeps the old one
        view = memoryview(copy)
        offset = seg.bufsz // 2
        view[offset] ^= 0xFF
        view.release()
        return "%s+%#x" % (what, offset)
    raise KexecError("%s=%s names no segment of this plan (have: %s)"
                     % (CORRUPT_ENV, what, ", ".join(s.what for s in segments)))


def _about(path):
    """Re-raise an image error naming the kernel file it is about (a plan reads two files)."""
    err = sys.exc_info()[1]
    text = str(err)
    if text.startswith(("kernel ", "initrd ", "the kernel ")):
        raise err
    raise type(err)("kernel %s: %s" % (path, text))


def make_plan(request, host, stages=None, method=None, environ=None, known_digests=None):
    """Build the Prepared load for ``request`` on ``host`` without touching the kernel.

    ``method`` forces one of classic/file (used for the auto fallback).  ``known_digests`` maps
    file paths to the sha256 a caller already computed (the kexec_load module hashes both files
    for its record), so a kexec_file_load report does not read them again.  Raises KexecError on
    anything wrong; nothing stays open then.
    """
    stages = stages or DEFAULT_STAGES
    environ = os.environ if environ is None else environ
    methods = choose_methods(request.method, host, request.kind)
    chosen = method or methods[0]
    prep = Prepared(request, chosen, methods, host)
    try:
        stages.arch(host)  # an architecture the loader does not know is refused here
        encode_cmdline(request.cmdline)  # both methods: no NUL, text the kernel and the report agree on
        if request.kind == "crash":
            if _get(host, "iomem_hidden"):
                raise HostError("the crash region is only listed in /proc/iomem, which the kernel hides "
                                "from non-root users; run as root (become: true)")
            region = _get(host, "crash_region")
            if region is None or getattr(region, "size", 1) == 0:
                raise PlanError("a crash kernel needs reserved memory but this host has no crash region; "
                                "boot it with crashkernel=256M (or more) on the kernel command line")
        limit = _get(host, "mem_total")
        prep.kernel = MappedFile(request.kernel, "kernel", max_size=limit)
        if request.initrd:
            prep.initrd = MappedFile(request.initrd, "initrd", max_size=limit)
        if request.kind == "crash":
            # Both methods, before any placement: a clear "needs X, holds Y" beats a segment
            # that does not fit (and kexec_file_load's bare ENOMEM).
            check_fits(_get(host, "crash_region"), stages.kernel_need(prep.kernel.map, host),
                       prep.initrd.size if prep.initrd is not None else 0,
                       page_size=_get(host, "page_size") or 4096)
        if prep.initrd is not None:
            # Both methods: the kernel would take any bytes and the next boot would panic.
            check_initramfs(prep.initrd.map, request.initrd)
        try:
            if chosen == "file":
                # One validation path for both methods: the image is probed and placed exactly as
                # kexec_load would place it (every format, size, command-line and placement rule), and
                # what kexec_file_load itself demands is checked on top; only the syscall differs.
                stages.check_file_load(prep.kernel.map, host)
                _validate_placement(prep, stages)
                _plan_file(prep, known_digests or {})
            else:
                _plan_classic(prep, stages)
        except ImageFormatError:
            _about(request.kernel)
        what = environ.get(CORRUPT_ENV)
        if what:
            prep.corrupted = _corrupt(prep.segments, what)
        return prep
    except BaseException:
        _drop_views(sys.exc_info()[2])
        prep.close()
        raise


def _plan_file(prep, known):
    prep.segments = [FileSegment("kernel", prep.kernel.map, known.get(prep.kernel.path))]
    if prep.initrd is not None:
        prep.segments.append(FileSegment("initrd", prep.initrd.map, known.get(prep.initrd.path)))
    flags = 0
    if prep.kind == "crash":
        flags |= _nr.KEXEC_FILE_ON_CRASH
    if prep.initrd is None:
        flags |= _nr.KEXEC_FILE_NO_INITRAMFS
    prep.flags = flags
    prep.entry = 0


def _validate_placement(prep, stages):
    """Place the image as a kexec_load plan would (no purgatory, no crash header: the kernel builds
    those for kexec_file_load) and check the plan against the kernel's segment rules."""
    host = prep.host
    plan = stages.new_plan(host, prep.kind, method="file")
    initrd = prep.initrd.map if prep.initrd is not None else None
    image = stages.load_image(prep.kernel.map, initrd, prep.cmdline, host, plan, crash=None)
    prep.warnings.extend(w for w in (getattr(image, "warnings", None) or []) if "RNG" not in w)
    plan.check()
    # Drop our references to the views into the mappings: the file segments hold their own.
    plan.segments = []


def _plan_classic(prep, stages):
    host = prep.host
    plan = stages.new_plan(host, prep.kind, method="classic")
    cmdline = prep.cmdline
    if prep.kind == "crash":
        prep.crash = stages.crash_setup(plan, host, cmdline)
        cmdline = prep.crash.cmdline
        prep.warnings.extend(prep.crash.warnings)
    prep.cmdline = cmdline
    initrd = prep.initrd.map if prep.initrd is not None else None
    image = stages.load_image(prep.kernel.map, initrd, cmdline, host, plan, crash=prep.crash)
    prep.image = image
    prep.warnings.extend(getattr(image, "warnings", None) or [])
    stages.link_purgatory(plan, image, host, crash=prep.crash)
    plan.check()
    if plan.entry is None:
        raise PlanError("the plan has no entry point after linking purgatory: a loader bug, please report it")
    prep.plan = plan
    prep.entry = plan.entry
    prep.segments = list(plan.segments)
    prep.flags = _kexec_flags(prep.kind, _get(host, "arch"))


# --------------------------------------------------------------------------------------------
# the syscall step


def _syscall(prep, syscalls):
    if prep.method == "file":
        initrd_fd = prep.initrd.fd if prep.initrd is not None else -1
        cmdline = prep.cmdline
        syscalls.kexec_file_load(prep.kernel.fd, initrd_fd, cmdline, prep.flags)
    else:
        syscalls.kexec_load(prep.entry, prep.segments, prep.flags)


def load(request, syscalls, host, dry_run=False, stages=None, environ=None, known_digests=None,
         save_segments=None):
    """Plan, check and load ``request``; returns a plain report dict.

    ``dry_run`` does every step (mapping, planning, linking, hashing every segment) but the
    syscall; with ``save_segments`` (a directory) it also writes every segment's bytes there.
    With method auto, a kexec_file_load the kernel cannot perform falls back once to kexec_load
    when the host permits it; signature refusals never fall back.
    """
    if save_segments and not dry_run:
        raise KexecError("--save-segments writes a plan's segments for inspection; use it with plan or "
                         "load --dry-run")
    syscalls.host = host
    report = None
    fallback = None
    with make_plan(request, host, stages=stages, environ=environ, known_digests=known_digests) as prep:
        if dry_run:
            report = prep.to_dict()  # hashes every segment: every page is read, as a load would
            if save_segments:
                prep.save_segments(save_segments, report)
        else:
            try:
                _syscall(prep, syscalls)
                report = prep.to_dict(hash_all=prep.method != "file")
            except SyscallError as err:
                if not (prep.method == "file" and "classic" in prep.methods and may_fall_back(err)):
                    raise
                fallback = err
    if fallback is not None:
        with make_plan(request, host, stages=stages, method="classic", environ=environ,
                       known_digests=known_digests) as prep:
            try:
                _syscall(prep, syscalls)
            except SyscallError as err:
                raise type(err)("%s\n(tried kexec_file_load first: %s)" % (err, fallback), err.errno)
            report = prep.to_dict()
            report["fallback_from"] = {"method": "file", "errno": fallback.errno, "error": str(fallback)}
    report["dry_run"] = bool(dry_run)
    report["loaded"] = not dry_run
    return report


def unload(syscalls, host, kind="normal", method="auto"):
    """Unload the normal or crash image.  auto: kexec_load with no segments when permitted, else
    kexec_file_load(KEXEC_FILE_UNLOAD); ENOSYS from one tries the other."""
    syscalls.host = host
    crash = kind == "crash"
    if method == "auto":
        reason, hard = classic_refusal(host)
        order = ["file", "classic"] if reason else ["classic", "file"]
        if hard:
            order = ["file"]
    else:
        order = [method]
    first = None
    for m in order:
        try:
            syscalls.unload(crash=crash, method=m)
            return {"unloaded": kind, "method": m}
        except SyscallError as err:
            if isinstance(err, SignatureError) or err.errno != _errno.ENOSYS:
                raise
            first = first or err
    raise first


def loaded_state(host):
    return {"normal": _get(host, "kexec_loaded"), "crash": _get(host, "kexec_crash_loaded")}


def execute(syscalls, host):
    """Jump into the loaded normal image.  Refuses when the host says nothing is loaded: the
    kernel would only answer EINVAL, and we want the reason said plainly."""
    syscalls.host = host
    state = _get(host, "kexec_loaded")
    if state is None:
        raise KexecError("cannot tell whether a kexec image is loaded (/sys/kernel/kexec_loaded is missing: "
                         "the kernel lacks kexec support); nothing to execute")
    if not state:
        raise KexecError("no kexec image is loaded (/sys/kernel/kexec_loaded is 0); run `load` first")
    syscalls.reboot_kexec()
    return {"executed": True}


def status(host):
    """What the host says about kexec, and which method auto would use (None: neither works)."""
    reason, hard = classic_refusal(host)
    try:
        auto = choose_methods("auto", host)[0]
    except MethodError:
        auto = None
    region = _get(host, "crash_region")
    if region is not None and hasattr(region, "to_dict"):
        region = region.to_dict()
    return {
        "arch": _get(host, "arch"),
        "release": _get(host, "release"),
        "kexec_loaded": _get(host, "kexec_loaded"),
        "kexec_crash_loaded": _get(host, "kexec_crash_loaded"),
        "crash_region": region,
        "lockdown": _get(host, "lockdown"),
        "secure_boot": _get(host, "secure_boot"),
        "kexec_load_disabled": _get(host, "kexec_load_disabled"),
        "syscalls": _get(host, "syscalls"),
        "auto_method": auto,
        "page_size": _get(host, "page_size"),
        "classic_refused": reason,
        "classic_refusal_is_hard": hard if reason else None,
    }


def crash_estimate(host, kernel, initrd=None, crashkernel=None, stages=None):
    """What a capture kernel booted from ``kernel`` and ``initrd`` needs on this host (see
    crash/sizing.py), and, given a ``crashkernel`` value, whether it reserves enough (``check``)."""
    stages = stages or DEFAULT_STAGES
    image = MappedFile(kernel, "kernel")
    try:
        kernel_bytes = stages.kernel_need(image.map, host)
    finally:
        image.close()
    initrd_bytes = plain = 0
    if initrd:
        ramdisk = MappedFile(initrd, "initrd")
        try:
            initrd_bytes, plain = ramdisk.size, plain_prefix(ramdisk.map)
        finally:
            ramdisk.close()
    memory_map = _get(host, "memory_map")
    est = _sizing.estimate(memory_map.total_ram(), kernel_bytes, initrd_bytes, plain, _get(host, "page_size") or 4096)
    est.update(kernel_path=kernel, initrd_path=initrd)
    region = _get(host, "crash_region")
    est["reserved"] = region.size if region is not None else None
    est["check"] = _sizing.check_reservation(est, crashkernel) if crashkernel else None
    return est


def file_sha256(path, what="file"):
    """sha256 of a regular file (for reports), mapped rather than read."""
    return files_sha256([(path, what)])[0]


def files_sha256(files):
    """sha256 of each (path, what) of ``files``, the large ones hashed at the same time.

    Each is opened as the loader opens its inputs (a regular, non-empty file, non-blocking: a FIFO
    is refused, not waited for), so a caller hashing before it loads gets the same refusals.
    """
    opened = []
    try:
        for path, what in files:
            opened.append(MappedFile(path, what))
        return sha256_many((m.map, None) for m in opened)
    finally:
        for m in opened:
            m.close()
