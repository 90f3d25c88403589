"""The kexec syscalls behind one small interface, a ctypes implementation and a recording fake.

Why an interface: the loader must be testable without root and without a kernel that would act on
the call (on a developer machine a successful ``reboot(LINUX_REBOOT_CMD_KEXEC)`` takes the machine
down).  ``Syscalls`` holds everything but the raw calls: argument marshalling rules, the unload
conventions and the errno -> message mapping, so the fake and the real thing fail identically.
``CtypesSyscalls`` issues the raw calls through libc's ``syscall()``; ``FakeSyscalls`` records them.

Buffers are never copied: a segment's buffer is a writable mapping (``mmap.ACCESS_COPY``: private,
copy-on-write, nothing copied unless written) or a bytearray, whose address ctypes takes with
``c_char.from_buffer``.  Immutable ``bytes`` are passed by the address of their own storage (the
kernel only reads segment buffers); anything else read-only is copied once into a ctypes buffer.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import ctypes.util
import errno as _errno
import hashlib
import os
import platform

from .digest import sha256_hex
from .errors import SignatureError, SyscallError

# <uapi/linux/kexec.h>: kexec_load flags (the high 16 bits name the architecture).
KEXEC_ON_CRASH = 0x00000001
KEXEC_PRESERVE_CONTEXT = 0x00000002
KEXEC_ARCH_MASK = 0xFFFF0000
KEXEC_ARCH_DEFAULT = 0 << 16
KEXEC_ARCH_386 = 3 << 16
KEXEC_ARCH_PPC64 = 21 << 16
KEXEC_ARCH_S390 = 22 << 16
KEXEC_ARCH_ARM = 40 << 16
KEXEC_ARCH_X86_64 = 62 << 16
KEXEC_ARCH_AARCH64 = 183 << 16
KEXEC_ARCH_RISCV = 243 << 16
KEXEC_SEGMENT_MAX = 16

# kexec_file_load flags.
KEXEC_FILE_UNLOAD = 0x00000001
KEXEC_FILE_ON_CRASH = 0x00000002
KEXEC_FILE_NO_INITRAMFS = 0x00000004

# <uapi/linux/reboot.h>
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_KEXEC = 0x45584543

# Per-architecture syscall numbers: (kexec_load, kexec_file_load, reboot).  None: no such syscall.
# aarch64 and riscv64 use the generic table (include/uapi/asm-generic/unistd.h).
SYSCALL_NUMBERS = {
    "x86_64": (246, 320, 169),
    "aarch64": (104, 294, 142),
    "riscv64": (104, 294, 142),
    "ppc64le": (268, 382, 88),
    "ppc64": (268, 382, 88),
    "s390x": (277, 381, 88),
    "i386": (283, None, 88),
}

KEXEC_ARCH_FLAGS = {
    "x86_64": KEXEC_ARCH_X86_64,
    "aarch64": KEXEC_ARCH_AARCH64,
    "riscv64": KEXEC_ARCH_RISCV,
    "ppc64le": KEXEC_ARCH_PPC64,
    "ppc64": KEXEC_ARCH_PPC64,
    "s390x": KEXEC_ARCH_S390,
    "i386": KEXEC_ARCH_386,
}

_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "i686": "i386", "i586": "i386",
                 "x86": "i386", "powerpc64le": "ppc64le", "powerpc64": "ppc64"}

# Errnos that mean "this kernel cannot do kexec_file_load for this image" (not "you may not"):
# only these let method auto fall back from kexec_file_load to kexec_load.
ENOTSUP = getattr(_errno, "ENOTSUP", 95)
EOPNOTSUPP = getattr(_errno, "EOPNOTSUPP", 95)
FALLBACK_ERRNOS = frozenset([_errno.ENOSYS, _errno.EINVAL, _errno.ENOEXEC, ENOTSUP, EOPNOTSUPP])

EKEYREJECTED = getattr(_errno, "EKEYREJECTED", 129)
ENOKEY = getattr(_errno, "ENOKEY", 126)
EBADMSG = getattr(_errno, "EBADMSG", 74)
EKEYREVOKED = getattr(_errno, "EKEYREVOKED", 128)
EKEYEXPIRED = getattr(_errno, "EKEYEXPIRED", 127)
ENODATA = getattr(_errno, "ENODATA", 61)
ENOPKG = getattr(_errno, "ENOPKG", 65)
# The kernel's signature check (kimage_validate_signature -> verify_pefile_signature) fails with
# these; ENODATA is "the image carries no signature at all".
SIGNATURE_ERRNOS = frozenset([EKEYREJECTED, ENOKEY, EBADMSG, EKEYREVOKED, EKEYEXPIRED, ENODATA, ENOPKG])


def normalize_arch(arch=None):
    """Kernel-style architecture name ('x86_64', 'aarch64', 'ppc64le', ...) of ``arch`` or this machine."""
    arch = arch or platform.machine()
    return _ARCH_ALIASES.get(arch, arch)


def kexec_arch_flag(arch):
    """The KEXEC_ARCH_* value kexec_load expects in its flags' high half for ``arch``."""
    return KEXEC_ARCH_FLAGS.get(normalize_arch(arch), KEXEC_ARCH_DEFAULT)


class KexecSegment(ctypes.Structure):
    """struct kexec_segment from <uapi/linux/kexec.h>: {const void *buf; size_t bufsz;
    unsigned long mem; size_t memsz;}"""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("bufsz", ctypes.c_size_t),
        ("mem", ctypes.c_ulong),
        ("memsz", ctypes.c_size_t),
    ]


def segment_values(segment):
    """(buf, bufsz, mem, memsz) of a segment: a plan Segment, any object with those attributes,
    or a 4-tuple.  bufsz defaults to len(buf), memsz to bufsz."""
    if isinstance(segment, tuple):
        buf, bufsz, mem, memsz = segment
    else:
        buf = getattr(segment, "buf", None)
        bufsz = getattr(segment, "bufsz", None)
        mem = getattr(segment, "mem", 0)
        memsz = getattr(segment, "memsz", None)
    if bufsz is None:
        bufsz = len(buf) if buf is not None else 0
    if memsz is None:
        memsz = bufsz
    if buf is None and bufsz:
        raise SyscallError("segment at 0x%x has bufsz %d but no buffer: a loader bug, please report it"
                           % (mem or 0, bufsz))
    if buf is not None and bufsz > len(buf):
        raise SyscallError("segment at 0x%x: bufsz %d exceeds its buffer (%d bytes): a loader bug, "
                           "please report it" % (mem or 0, bufsz, len(buf)))
    return buf, bufsz, mem or 0, memsz


def buffer_sha256(buf, bufsz=None):
    """Hex sha256 of the first ``bufsz`` bytes of ``buf`` (all of it by default), without copying."""
    return sha256_hex(buf, bufsz)


# --------------------------------------------------------------------------------------------
# errno -> message


def _errno_name(value):
    return _errno.errorcode.get(value, "errno %d" % value)


def _host_get(host, name, default=None):
    if host is None:
        return default
    if isinstance(host, dict):
        return host.get(name, default)
    return getattr(host, name, default)


def lockdown_mode(host):
    """'none', 'integrity', 'confidentiality' or None (unknown) from the host value."""
    mode = _host_get(host, "lockdown")
    if mode is None:
        return None
    mode = str(mode).strip()
    if "[" in mode:  # raw /sys/kernel/security/lockdown: "none [integrity] confidentiality"
        mode = mode[mode.index("[") + 1:mode.index("]")]
    return mode or None


def error_for(op, err, host=None, euid=None):
    """The KexecError for ``op`` ('kexec_load', 'kexec_file_load', 'reboot', ...) failing with
    ``err``: SignatureError for a refused signature, SyscallError otherwise.  The message names
    the errno and says what to do; ``host`` (when known) lets EPERM say which rule refused."""
    name = _errno_name(err)
    head = "%s failed: %s (%s)" % (op, os.strerror(err), name)
    is_file = op.startswith("kexec_file_load")
    other = "--method classic" if is_file else "--method file"
    if euid is None:
        euid = os.geteuid()
    lockdown = lockdown_mode(host)
    disabled = _host_get(host, "kexec_load_disabled")
    secure_boot = _host_get(host, "secure_boot")

    if err in SIGNATURE_ERRNOS:
        what = {
            EKEYREJECTED: "the kernel image's signature was rejected",
            ENOKEY: "the kernel image is signed by a key the running kernel does not trust",
            EBADMSG: "the kernel image's signature is malformed",
            EKEYREVOKED: "the key that signed the kernel image has been revoked",
            EKEYEXPIRED: "the key that signed the kernel image has expired",
            ENODATA: "the kernel image carries no signature",
            ENOPKG: "the running kernel lacks the crypto needed to verify the image's signature",
        }[err]
        return SignatureError(
            "%s: %s. Use a kernel signed by a key in the kernel's keyrings (the distribution's "
            "signed linux-image package, or one signed for your MOK), or disable lockdown / Secure "
            "Boot enforcement." % (head, what), err)
    if err == _errno.EPERM:
        if euid != 0:
            return SyscallError("%s: not running as root (CAP_SYS_BOOT is required); run it as root, "
                                "e.g. with sudo or become: true." % head, err)
        if disabled:
            return SyscallError(
                "%s: kexec is disabled on this host (/proc/sys/kernel/kexec_load_disabled = 1), which "
                "refuses kexec_load and kexec_file_load alike and cannot be cleared until the next "
                "reboot; reboot through firmware instead, and do not set kernel.kexec_load_disabled "
                "if you want kexec." % head, err)
        if is_file and lockdown in ("integrity", "confidentiality"):
            return SignatureError(
                "%s: kernel lockdown (%s) requires a kernel image with a signature the running kernel "
                "verifies; use the distribution's signed kernel (or one signed for your MOK), or "
                "disable lockdown." % (head, lockdown), err)
        if not is_file and lockdown in ("integrity", "confidentiality"):
            return SyscallError(
                "%s: kernel lockdown (%s) forbids kexec_load; use --method file (kexec_file_load) "
                "with a signed kernel, or --method auto which picks it." % (head, lockdown), err)
        if not is_file and secure_boot:
            return SyscallError(
                "%s: Secure Boot is enabled and the kernel refuses unsigned kexec_load; use "
                "--method file with a signed kernel." % head, err)
        return SyscallError(
            "%s: refused although running as root; the kernel may be locked down (check "
            "/sys/kernel/security/lockdown), kexec may be disabled "
            "(/proc/sys/kernel/kexec_load_disabled), or a security module (SELinux, AppArmor) denies "
            "it; try %s or check the audit log." % (head, other), err)
    if err == _errno.EBUSY:
        return SyscallError(
            "%s: another kexec load or exec is in progress (or the loaded image is in use); wait for "
            "it to finish and retry." % head, err)
    if err == _errno.ENOMEM:
        return SyscallError(
            "%s: the kernel could not allocate memory for the image (or the crash region is too "
            "small for it); free memory, use a smaller initrd, or for a crash kernel boot with a "
            "larger crashkernel= reservation." % head, err)
    if err == _errno.EADDRNOTAVAIL:
        return SyscallError(
            "%s: a crash kernel segment lies outside the reserved crash region, or no region is "
            "reserved; boot the running kernel with crashkernel=<size> (e.g. crashkernel=256M) and "
            "check /sys/kernel/kexec_crash_size." % head, err)
    if err == _errno.ENOSYS:
        cfg = "CONFIG_KEXEC_FILE" if is_file else "CONFIG_KEXEC"
        if op == "reboot":
            cfg = "CONFIG_KEXEC_CORE"
        return SyscallError(
            "%s: the running kernel does not have this syscall (built without %s); %s"
            % (head, cfg, "use " + other + "." if op != "reboot" else "reboot through firmware."),
            err)
    if err == _errno.ENOEXEC:
        return SyscallError(
            "%s: the running kernel cannot load this image format (kexec_file_load on x86 needs a "
            "64-bit bzImage; a PE/EFI-only or compressed image may need the other method); %s."
            % (head, "use --method classic" if is_file else "check the --kernel file"), err)
    if err in (ENOTSUP, EOPNOTSUPP):
        return SyscallError("%s: the running kernel does not support this for this image or "
                            "architecture; use %s." % (head, other), err)
    if err == _errno.EINVAL:
        if op == "reboot":
            return SyscallError("%s: no kexec image is loaded; run `load` first." % head, err)
        if is_file:
            return SyscallError(
                "%s: the kernel rejected the image, initrd or command line (too long, not "
                "NUL-terminated, or an image it cannot parse); check them or use --method classic."
                % head, err)
        return SyscallError(
            "%s: the kernel rejected the segment list or flags (overlap, alignment, too many "
            "segments, wrong KEXEC_ARCH); run `plan` to inspect it and report a loader bug if "
            "plan's check passes." % head, err)
    if err == _errno.EBADF:
        return SyscallError("%s: bad file descriptor for the kernel or initrd; check that the files "
                            "are regular readable files." % head, err)
    if err == _errno.EFAULT:
        return SyscallError("%s: the kernel could not read a segment buffer: a loader bug, please "
                            "report it." % head, err)
    if err == _errno.EFBIG:
        return SyscallError("%s: the kernel or initrd is larger than the kernel accepts; use a "
                            "smaller initrd." % head, err)
    if err == _errno.ETXTBSY:
        return SyscallError("%s: the kernel or initrd file is open for writing by another process; "
                            "wait for it to finish." % head, err)
    return SyscallError("%s; check the kernel log (dmesg) for the reason." % head, err)


# --------------------------------------------------------------------------------------------
# the interface


class Syscalls:
    """kexec_load, kexec_file_load, unload and reboot(KEXEC).

    Subclasses implement the ``_raw_*`` methods, which return 0 or an errno and never raise for
    a refusal; everything else (flags, unload conventions, messages) lives here once.  ``host``
    (optional, set by the loader) only refines error messages.
    """

    def __init__(self, arch=None, host=None):
        self.arch = normalize_arch(arch)
        self.host = host

    def _fail(self, op, err):
        raise error_for(op, err, self.host)

    def kexec_load(self, entry, segments, flags):
        """Load ``segments`` (plan Segments or (buf, bufsz, mem, memsz)) to start at ``entry``."""
        segments = list(segments)
        err = self._raw_kexec_load(entry, segments, flags)
        if err:
            self._fail("kexec_load", err)

    def kexec_file_load(self, kernel_fd, initrd_fd, cmdline, flags):
        """Let the kernel load the image from ``kernel_fd`` (initrd_fd -1 for none)."""
        if initrd_fd is None or initrd_fd < 0:
            initrd_fd = -1
            if not flags & KEXEC_FILE_UNLOAD:
                flags |= KEXEC_FILE_NO_INITRAMFS
        if isinstance(cmdline, str):
            cmdline = cmdline.encode("utf-8")
        cmdline = bytes(cmdline or b"")
        if b"\0" in cmdline:
            raise SyscallError("kexec_file_load: the command line contains a NUL byte; remove it.")
        err = self._raw_kexec_file_load(kernel_fd, initrd_fd, cmdline, flags)
        if err:
            self._fail("kexec_file_load", err)

    def unload(self, crash=False, method="classic"):
        """Unload the normal (or crash) image: kexec_load with no segments, or kexec_file_load
        with KEXEC_FILE_UNLOAD (the only way under lockdown, which refuses kexec_load)."""
        if method == "file":
            flags = KEXEC_FILE_UNLOAD | (KEXEC_FILE_ON_CRASH if crash else 0)
            err = self._raw_kexec_file_load(-1, -1, b"", flags)
            if err:
                self._fail("kexec_file_load(KEXEC_FILE_UNLOAD)", err)
        else:
            flags = kexec_arch_flag(self.arch) | (KEXEC_ON_CRASH if crash else 0)
            err = self._raw_kexec_load(0, [], flags)
            if err:
                self._fail("kexec_load(unload)", err)

    def reboot_kexec(self):
        """Jump into the loaded image (reboot(LINUX_REBOOT_CMD_KEXEC)); returns only on failure
        or after a preserve_context image jumped back."""
        err = self._raw_reboot(LINUX_REBOOT_CMD_KEXEC)
        if err:
            self._fail("reboot", err)

    # raw calls: return 0 or an errno
    def _raw_kexec_load(self, entry, segments, flags):
        raise NotImplementedError

    def _raw_kexec_file_load(self, kernel_fd, initrd_fd, cmdline, flags):
        raise NotImplementedError

    def _raw_reboot(self, cmd):
        raise NotImplementedError


class _Pinned:
    """Addresses of segment buffers plus the ctypes objects that keep them valid.

    ``release()`` drops every export so the caller can close its mmaps afterwards (an mmap with a
    live ctypes export refuses to close).
    """

    def __init__(self):
        self.keep = []

    def address(self, buf, bufsz):
        if buf is None or bufsz == 0:
            return None
        if isinstance(buf, bytes):
            # Immutable: its storage cannot move while we hold a reference; the kernel only reads.
            ptr = ctypes.c_char_p(buf)
            self.keep.append((buf, ptr))
            return ctypes.cast(ptr, ctypes.c_void_p).value
        try:
            cell = ctypes.c_char.from_buffer(buf)
        except TypeError:
            # A read-only buffer that is not bytes (e.g. an ACCESS_READ mmap or a read-only
            # memoryview): one copy into a ctypes buffer.
            cell = (ctypes.c_char * bufsz).from_buffer_copy(memoryview(buf)[:bufsz])
        self.keep.append(cell)
        return ctypes.addressof(cell)

    def release(self):
        del self.keep[:]


class CtypesSyscalls(Syscalls):
    """The real syscalls through libc's syscall(2).  Only ever used on the lab's VMs and hosts
    being kexec'd on purpose: tests use FakeSyscalls."""

    def __init__(self, arch=None, host=None):
        super(CtypesSyscalls, self).__init__(arch, host)
        if self.arch not in SYSCALL_NUMBERS:
            raise SyscallError("kexec syscalls are not known for architecture %r; supported: %s"
                               % (self.arch, ", ".join(sorted(SYSCALL_NUMBERS))))
        self.nr_kexec_load, self.nr_kexec_file_load, self.nr_reboot = SYSCALL_NUMBERS[self.arch]
        self._libc = None

    def _syscall(self):
        if self._libc is None:
            name = ctypes.util.find_library("c") or None
            libc = ctypes.CDLL(name, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            self._libc = libc
        return self._libc.syscall

    def _call(self, nr, *args):
        ctypes.set_errno(0)
        ret = self._syscall()(ctypes.c_long(nr), *args)
        if ret == -1:
            return ctypes.get_errno() or _errno.EIO
        return 0

    def _raw_kexec_load(self, entry, segments, flags):
        pinned = _Pinned()
        try:
            array = (KexecSegment * max(1, len(segments)))()
            for i, seg in enumerate(segments):
                buf, bufsz, mem, memsz = segment_values(seg)
                array[i].buf = pinned.address(buf, bufsz)
                array[i].bufsz = bufsz
                array[i].mem = mem
                array[i].memsz = memsz
            return self._call(self.nr_kexec_load, ctypes.c_ulong(entry), ctypes.c_ulong(len(segments)),
                              ctypes.byref(array) if segments else ctypes.c_void_p(None),
                              ctypes.c_ulong(flags))
        finally:
            pinned.release()

    def _raw_kexec_file_load(self, kernel_fd, initrd_fd, cmdline, flags):
        if self.nr_kexec_file_load is None:
            return _errno.ENOSYS
        if cmdline:
            text = ctypes.create_string_buffer(cmdline)  # NUL-terminated; length counts the NUL
            length, ptr = len(cmdline) + 1, ctypes.cast(text, ctypes.c_void_p)
        else:
            length, ptr = 0, ctypes.c_void_p(None)
        # Every argument travels as a full register-sized value; the kernel reads the low 32 bits
        # of the int ones.
        return self._call(self.nr_kexec_file_load, ctypes.c_long(kernel_fd), ctypes.c_long(initrd_fd),
                          ctypes.c_ulong(length), ptr, ctypes.c_ulong(flags))

    def _raw_reboot(self, cmd):
        self._libc_sync()
        return self._call(self.nr_reboot, ctypes.c_ulong(LINUX_REBOOT_MAGIC1),
                          ctypes.c_ulong(LINUX_REBOOT_MAGIC2), ctypes.c_ulong(cmd), ctypes.c_void_p(None))

    def _libc_sync(self):
        """Flush file systems before the jump, as kexec -e does: nothing else will."""
        self._syscall()  # loads libc
        self._libc.sync()


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


def default_syscalls(arch=None, host=None):
    """The real implementation for this machine."""
    return CtypesSyscalls(arch, host)
