# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""errno -> the message a user reads: what the kernel refused and what to do about it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno as _errno
import os

from ..errors import SignatureError, SyscallError
from ..host.security import lockdown_mode
from .errnos import (EBADMSG, EKEYEXPIRED, EKEYREJECTED, EKEYREVOKED, ENODATA, ENOKEY, ENOPKG,
                     ENOTSUP, EOPNOTSUPP, SIGNATURE_ERRNOS)


def _errno_name(value):
    return _errno.errorcode.get(value, "errno %d" % value)


def _host_get(host, name, default=None):
    if host is None:
        return default
    if isinstance(host, dict):
        return host.get(name, default)
    return getattr(host, name, default)


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
