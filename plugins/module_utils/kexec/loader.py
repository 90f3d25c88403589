"""Orchestration: request -> host -> image -> plan -> purgatory -> check -> syscall.

Everything before the syscall only reads: files are opened and mapped once (``mmap.ACCESS_COPY``,
private copy-on-write, so ctypes can take their address and nothing is copied), the plan is built
and checked, purgatory is linked.  Only then does one syscall (or, for method auto, at most one
fallback) touch the kernel, so any KexecError raised before it leaves the host as it was.

Method ``auto``: kexec_load when the host permits it; kexec_file_load when lockdown, Secure Boot or
kexec_load_disabled forbid kexec_load (or the kernel was built without it).  A kexec_file_load that
fails because the kernel cannot do it for this image (ENOSYS, EINVAL, ENOEXEC, EOPNOTSUPP) falls
back to kexec_load when that is permitted; a refused signature never falls back: that refusal is
the security policy working.

Test-only hook: ``FLEETBOOT_TEST_CORRUPT_SEGMENT=<what>`` (e.g. ``kernel``) flips one byte of that
segment (in a private copy) *after* purgatory recorded its digests, so the lab can prove purgatory
halts on a mismatch.  It exists for tests/e2e/test_purgatory_halt.py only; never set it otherwise.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno as _errno
import gc
import hashlib
import mmap
import os
import stat
import sys
import traceback

from .errors import HostError, ImageFormatError, KexecError, PlanError, SignatureError, SyscallError
from . import syscalls as _sc
from .image.initramfs import check_initramfs

KINDS = ("normal", "crash", "preserve_context")
METHODS = ("auto", "classic", "file")
CORRUPT_ENV = "FLEETBOOT_TEST_CORRUPT_SEGMENT"

# Options that describe the *running* kernel's crash setup or boot loader, not the next kernel.
REUSE_DROP = ("BOOT_IMAGE=", "crashkernel=", "elfcorehdr=", "kexec_jump_back_entry=")


class Request:
    """What to load: a plain value (paths, command line, kind, method)."""

    __slots__ = ("kernel", "initrd", "cmdline", "kind", "method")

    def __init__(self, kernel, initrd=None, cmdline="", kind="normal", method="auto"):
        if kind not in KINDS:
            raise KexecError("unknown kind %r: use one of %s" % (kind, ", ".join(KINDS)))
        if method not in METHODS:
            raise KexecError("unknown method %r: use one of %s" % (method, ", ".join(METHODS)))
        if kind == "preserve_context" and method == "file":
            raise KexecError("kexec_file_load cannot preserve context (kexec jump); use --method classic")
        if not kernel:
            raise KexecError("no kernel given; pass --kernel /boot/vmlinuz-<version>")
        self.kernel = kernel
        self.initrd = initrd or None
        self.cmdline = cmdline or ""
        self.kind = kind
        self.method = method

    def replace(self, **changes):
        fields = self.to_dict()
        fields.update(changes)
        return Request(**fields)

    def to_dict(self):
        return {"kernel": self.kernel, "initrd": self.initrd, "cmdline": self.cmdline,
                "kind": self.kind, "method": self.method}

    def __eq__(self, other):
        return isinstance(other, Request) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "Request(%s)" % ", ".join("%s=%r" % kv for kv in sorted(self.to_dict().items()))


# --------------------------------------------------------------------------------------------
# command lines


def split_cmdline(text):
    """Split a kernel command line into words, keeping double-quoted values together
    (``foo="a b"`` is one word), the way the kernel's next_arg() does."""
    words, cur, quoted, started = [], [], False, False
    for ch in text or "":
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
            started = True
        elif ch.isspace() and not quoted:
            if started:
                words.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        words.append("".join(cur))
    return words


def reuse_cmdline(current, kind="normal"):
    """The running kernel's command line minus what only describes this boot: BOOT_IMAGE= (the
    boot loader's), crashkernel= (a crash kernel must not reserve again; a normal kernel gets it
    back from the running one below only when kind is normal), elfcorehdr=, kexec_jump_back_entry=."""
    out = []
    for word in split_cmdline(current):
        if any(word.startswith(p) for p in REUSE_DROP):
            if kind == "normal" and word.startswith("crashkernel="):
                out.append(word)  # the next normal kernel should reserve the crash region again
            continue
        out.append(word)
    return " ".join(out)


def join_cmdline(*parts):
    return " ".join(p.strip() for p in parts if p and p.strip())


# --------------------------------------------------------------------------------------------
# method selection


def _get(host, name, default=None):
    if host is None:
        return default
    if isinstance(host, dict):
        return host.get(name, default)
    return getattr(host, name, default)


def classic_refusal(host):
    """(reason, hard) why kexec_load would be refused on ``host``, or (None, False).

    hard: the kernel will certainly refuse it (lockdown, kexec_load_disabled, not built in), so
    falling back to it is pointless.  Secure Boot without lockdown is soft: kexec_file_load is
    preferred there, but kexec_load may still work if the former cannot load the image.
    """
    if _get(host, "kexec_load_disabled"):
        return "kexec_load_disabled is set", True
    lockdown = _sc.lockdown_mode(host)
    if lockdown in ("integrity", "confidentiality"):
        return "kernel lockdown is %s" % lockdown, True
    available = _get(host, "syscalls") or {}
    if available.get("kexec_load") is False and available.get("kexec_file_load"):
        return "the kernel is built without kexec_load (CONFIG_KEXEC)", True
    if _get(host, "secure_boot"):
        return "Secure Boot is enabled", False
    return None, False


def choose_methods(request_method, host, kind="normal"):
    """Ordered list of methods to try for ``request_method`` on ``host``; the first is the plan's.

    classic/file: just that one.  auto: classic when permitted; else file, followed by classic
    when the refusal is soft.  preserve_context only exists for classic.
    """
    if request_method in ("classic", "file"):
        return [request_method]
    if kind == "preserve_context":
        return ["classic"]
    reason, hard = classic_refusal(host)
    if reason is None:
        return ["classic"]
    return ["file"] if hard else ["file", "classic"]


def may_fall_back(err):
    """True when a failed kexec_file_load may be retried with kexec_load."""
    if isinstance(err, SignatureError):
        return False
    return getattr(err, "errno", None) in _sc.FALLBACK_ERRNOS


# --------------------------------------------------------------------------------------------
# stages (real modules by default; tests may pass stand-ins)


class Stages:
    """The pipeline's steps, resolved lazily so a missing optional module only matters when used."""

    def read_host(self, sysroot):
        from .host import Host
        return Host.read(sysroot)

    def new_plan(self, host, kind, method="classic"):
        from .plan import Plan
        return Plan(_get(host, "memory_map"), kind=kind, crash_region=_get(host, "crash_region"),
                    arch=_sc.normalize_arch(_get(host, "arch")), method=method,
                    totalram_pages=_get(host, "totalram_pages"))

    def image_format(self, buf, arch="x86_64"):
        """The format class (with load()) that recognises ``buf``; ImageFormatError otherwise."""
        from .image import probe_image
        return probe_image(buf, arch=arch)

    def load_image(self, buf, initrd, cmdline, host, plan, memory_map=None):
        """Place the image's segments; ``memory_map`` (crash loads) is what its e820 shows."""
        arch = _sc.normalize_arch(_get(host, "arch") or "x86_64")
        return self.image_format(buf, arch).load(buf, initrd, cmdline, host, plan, memory_map=memory_map)

    def kernel_need(self, buf, arch="x86_64"):
        """Bytes the kernel occupies once loaded: a bzImage's init_size (it decompresses in
        place), else the file's size."""
        try:
            image = self.image_format(buf, arch).parse(buf)
        except (KexecError, AttributeError):
            return len(buf)
        header = getattr(image, "header", None)
        return max(getattr(header, "init_size", 0) or 0, len(buf))

    def crash_setup(self, plan, host, cmdline):
        """Core header, backup copy and capture memory map for a classic crash load (crash.py)."""
        from . import crash as _crash
        return _crash.prepare(plan, host, cmdline)

    def link_purgatory(self, plan, image, backup=None):
        """Link purgatory over every segment already in ``plan``; sets plan.entry."""
        from .purgatory import link_purgatory
        entry = getattr(image, "entry64", None)
        if entry is None:
            entry = getattr(image, "entry", None)
        return link_purgatory(plan, entry, getattr(image, "boot_params_addr", None), backup=backup)


DEFAULT_STAGES = Stages()


# --------------------------------------------------------------------------------------------
# files


class MappedFile:
    """A file opened once and mapped private copy-on-write (ACCESS_COPY): writable for ctypes,
    never copied unless written (only the test-only corruption hook writes)."""

    def __init__(self, path, what):
        self.path = path
        self.what = what
        self.fd = None
        self.map = None
        try:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            st = os.fstat(self.fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImageFormatError("%s %s is not a regular file; pass the image file itself" % (what, path))
            if st.st_size == 0:
                raise ImageFormatError("%s %s is empty; pass a non-empty file" % (what, path))
            self.size = st.st_size
            self.map = mmap.mmap(self.fd, 0, access=mmap.ACCESS_COPY)
        except OSError as e:
            self.close()
            raise ImageFormatError("cannot read %s %s: %s; check the path and permissions"
                                   % (what, path, e.strerror or e))
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


class FileSegment:
    """What kexec_file_load will load, for the plan's report (the kernel places it: mem None)."""

    def __init__(self, what, buf):
        self.what = what
        self.buf = buf
        self.bufsz = len(buf)
        self.memsz = len(buf)
        self.mem = None

    @property
    def sha256(self):
        return _sc.buffer_sha256(self.buf)


def _seg_sha256(seg):
    value = getattr(seg, "sha256", None)
    if callable(value):
        value = value()
    if value is None and getattr(seg, "buf", None) is not None:
        value = _sc.buffer_sha256(seg.buf, getattr(seg, "bufsz", None))
    return value


def segment_dict(seg, digest=None):
    return {"what": seg.what, "mem": seg.mem, "memsz": seg.memsz, "bufsz": seg.bufsz,
            "sha256": digest if digest is not None else _seg_sha256(seg)}


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
            self._digests = [_seg_sha256(s) for s in self.segments]
        return self._digests

    def to_dict(self):
        segments = []
        for seg, digest in zip(self.segments, self.digests()):
            d = segment_dict(seg, digest)
            segments.append(d)
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
    traceback.clear_frames(tb)


def _kexec_flags(kind, arch):
    flags = _sc.kexec_arch_flag(arch)
    if kind == "crash":
        flags |= _sc.KEXEC_ON_CRASH
    elif kind == "preserve_context":
        flags |= _sc.KEXEC_PRESERVE_CONTEXT
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


def make_plan(request, host, stages=None, method=None, environ=None):
    """Build the Prepared load for ``request`` on ``host`` without touching the kernel.

    ``method`` forces one of classic/file (used for the auto fallback).  Raises KexecError on
    anything wrong; nothing stays open then.
    """
    stages = stages or DEFAULT_STAGES
    environ = os.environ if environ is None else environ
    methods = choose_methods(request.method, host, request.kind)
    chosen = method or methods[0]
    prep = Prepared(request, chosen, methods, host)
    try:
        if request.kind == "crash":
            if _get(host, "iomem_hidden"):
                raise HostError("the crash region is only listed in /proc/iomem, which the kernel hides "
                                "from non-root users; run as root (become: true)")
            region = _get(host, "crash_region")
            if region is None or getattr(region, "size", 1) == 0:
                raise PlanError("a crash kernel needs reserved memory but this host has no crash region; "
                                "boot it with crashkernel=256M (or more) on the kernel command line")
        prep.kernel = MappedFile(request.kernel, "kernel")
        if request.initrd:
            prep.initrd = MappedFile(request.initrd, "initrd")
            # Both methods: the kernel would take any bytes and the next boot would panic.
            check_initramfs(prep.initrd.map, request.initrd)
        if request.kind == "crash":
            # Both methods, before any placement: a clear "needs X, holds Y" beats a segment
            # that does not fit (and kexec_file_load's bare ENOMEM).
            from .crash import check_fits
            arch = _sc.normalize_arch(_get(host, "arch") or "x86_64")
            check_fits(_get(host, "crash_region"), stages.kernel_need(prep.kernel.map, arch),
                       prep.initrd.size if prep.initrd is not None else 0)
        if chosen == "file":
            _plan_file(prep)
        else:
            _plan_classic(prep, stages)
        what = environ.get(CORRUPT_ENV)
        if what:
            prep.corrupted = _corrupt(prep.segments, what)
        return prep
    except BaseException:
        _drop_views(sys.exc_info()[2])
        prep.close()
        raise


def _plan_file(prep):
    prep.segments = [FileSegment("kernel", prep.kernel.map)]
    if prep.initrd is not None:
        prep.segments.append(FileSegment("initrd", prep.initrd.map))
    flags = 0
    if prep.kind == "crash":
        flags |= _sc.KEXEC_FILE_ON_CRASH
    if prep.initrd is None:
        flags |= _sc.KEXEC_FILE_NO_INITRAMFS
    prep.flags = flags
    prep.entry = 0


def _plan_classic(prep, stages):
    host = prep.host
    plan = stages.new_plan(host, prep.kind, method="classic")
    cmdline = prep.cmdline
    memory_map = backup = None
    if prep.kind == "crash":
        prep.crash = stages.crash_setup(plan, host, cmdline)
        cmdline, memory_map, backup = prep.crash.cmdline, prep.crash.memory_map, prep.crash.backup
        prep.warnings.extend(prep.crash.warnings)
    prep.cmdline = cmdline
    initrd = prep.initrd.map if prep.initrd is not None else None
    if memory_map is None:
        image = stages.load_image(prep.kernel.map, initrd, cmdline, host, plan)
    else:
        image = stages.load_image(prep.kernel.map, initrd, cmdline, host, plan, memory_map=memory_map)
    prep.image = image
    prep.warnings.extend(getattr(image, "warnings", None) or [])
    if backup:
        stages.link_purgatory(plan, image, backup=backup)
    else:
        stages.link_purgatory(plan, image)
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


def load(request, syscalls, host, dry_run=False, stages=None, environ=None):
    """Plan, check and load ``request``; returns a plain report dict.

    ``dry_run`` does every step (mapping, planning, linking, hashing every segment) but the
    syscall.  With method auto, a kexec_file_load the kernel cannot perform falls back once to
    kexec_load when the host permits it; signature refusals never fall back.
    """
    syscalls.host = host
    report = None
    fallback = None
    with make_plan(request, host, stages=stages, environ=environ) as prep:
        if dry_run:
            report = prep.to_dict()  # hashes every segment: every page is read, as a load would
        else:
            try:
                _syscall(prep, syscalls)
                report = prep.to_dict()
            except SyscallError as err:
                if not (prep.method == "file" and "classic" in prep.methods and may_fall_back(err)):
                    raise
                fallback = err
    if fallback is not None:
        with make_plan(request, host, stages=stages, method="classic", environ=environ) as prep:
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
    """What the host says about kexec, and which method auto would use."""
    reason, hard = classic_refusal(host)
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
        "auto_method": choose_methods("auto", host)[0],
        "classic_refused": reason,
        "classic_refusal_is_hard": hard if reason else None,
    }


def file_sha256(path):
    """sha256 of a file (for reports), mapped rather than read."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not size:
            return hashlib.sha256().hexdigest()
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return hashlib.sha256(m).hexdigest()
        finally:
            m.close()
