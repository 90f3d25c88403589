# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which syscall a load uses: kexec_load ("classic") or kexec_file_load ("file").

``auto`` takes kexec_load when the host permits it and kexec_file_load when lockdown, Secure Boot
or kexec_load_disabled forbid kexec_load (or the kernel was built without it).  A kexec_file_load
that fails because the kernel cannot do it for this image (ENOSYS, EINVAL, ENOEXEC, EOPNOTSUPP)
falls back to kexec_load when that is permitted; a refused signature never falls back: that
refusal is the security policy working.  An explicit method the host forbids is refused here,
before anything is read, with the same reason ``status`` gives.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .errors import KexecError, SignatureError
from .host.security import lockdown_mode
from .syscalls.errnos import FALLBACK_ERRNOS


class MethodError(KexecError):
    """The host forbids the method asked for."""


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
    lockdown = lockdown_mode(host)
    if lockdown in ("integrity", "confidentiality"):
        return "kernel lockdown is %s" % lockdown, True
    available = _get(host, "syscalls") or {}
    if available.get("kexec_load") is False:
        return "the kernel is built without kexec_load (CONFIG_KEXEC)", True
    if _get(host, "secure_boot"):
        return "Secure Boot is enabled", False
    return None, False


def file_refusal(host):
    """(reason, hard) why kexec_file_load would be refused on ``host``, or (None, False)."""
    if _get(host, "kexec_load_disabled"):
        return "kexec_load_disabled is set", True
    available = _get(host, "syscalls") or {}
    if available.get("kexec_file_load") is False:
        return "the kernel is built without kexec_file_load (CONFIG_KEXEC_FILE)", True
    return None, False


def choose_methods(request_method, host, kind="normal"):  # pylint: disable=unused-argument
    """Ordered list of methods to try for ``request_method`` on ``host``; the first is the plan's.

    classic/file: just that one (refused with MethodError when the host certainly forbids it).
    auto: classic when permitted; else file, followed by classic when the refusal is soft.
    """
    if _get(host, "kexec_load_disabled"):
        raise MethodError("kexec is disabled on this host (/proc/sys/kernel/kexec_load_disabled = 1), which "
                          "refuses kexec_load and kexec_file_load alike and cannot be cleared until the next "
                          "reboot; reboot it through the firmware, and do not set kernel.kexec_load_disabled "
                          "where kexec is wanted")
    if request_method in ("classic", "file"):
        reason, hard = (classic_refusal if request_method == "classic" else file_refusal)(host)
        if reason and hard:
            other = "file" if request_method == "classic" else "classic"
            other_reason, other_hard = (file_refusal if other == "file" else classic_refusal)(host)
            hint = ("use --method %s (or auto)" % other) if not (other_reason and other_hard) else \
                "kexec is not possible on this host; reboot it through the firmware"
            raise MethodError("--method %s is refused on this host: %s; %s; nothing was loaded"
                              % (request_method, reason, hint))
        return [request_method]
    reason, hard = classic_refusal(host)
    if reason is None:
        return ["classic"]
    file_reason, file_hard = file_refusal(host)
    if file_reason and file_hard:
        if hard:
            raise MethodError("kexec is not possible on this host: kexec_load is refused (%s) and "
                              "kexec_file_load too (%s); reboot it through the firmware" % (reason, file_reason))
        return ["classic"]
    return ["file"] if hard else ["file", "classic"]


def may_fall_back(err):
    """True when a failed kexec_file_load may be retried with kexec_load."""
    if isinstance(err, SignatureError):
        return False
    return getattr(err, "errno", None) in FALLBACK_ERRNOS
