# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How much memory a capture environment needs, and whether a crashkernel= reservation holds it.

fit.py answers "can the loader place the capture kernel in the region"; this answers "will the
capture kernel then have room to boot and save the dump", which depends on the host's RAM: on a
TiB host makedumpfile's page bitmaps alone take more than a small reservation has.  The estimate
is the larger of two peaks:

- booting: the kernel (with its decompression space, as the loader places it), the initrd as
  loaded, and the initramfs unpacked into its rootfs (compressed parts counted at 3x, the ratio of
  Debian's zstd initramfs; Debian's run-init frees it when it switches to the disk's root);
- saving: the kernel, the capture userspace (systemd, udev, python3 for save-vmcore, ssh, and
  makedumpfile's own buffers) and makedumpfile's two page bitmaps, one bit per page of the
  crashed host's RAM each (the RHEL kdump guide's "2 bits per 4 KiB page").

Plus the loader's own 2 MiB (fit.LOADER_OVERHEAD).  The userspace base is measured in the lab
(see README: a 2 GiB VM's capture kernel with 256 MiB had about 150 MB free once its userspace
ran, with the kernel resident); it is deliberately generous, because a capture kernel that runs
out of memory loses the dump.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ..core.memmap import align_up
from ..errors import PlanError
from .fit import LOADER_OVERHEAD, mib

#: The capture kernel's userspace and makedumpfile's fixed buffers.
CAPTURE_USERSPACE = 96 << 20
#: Unpacked size of a compressed initramfs part per byte of it.
INITRD_UNPACK_FACTOR = 3
#: makedumpfile keeps two bitmaps of one bit per page of the dumped RAM.
BITMAP_BITS_PER_PAGE = 2
#: Suggested sizes are rounded up to this.
SUGGEST_STEP = 64 << 20

_SIZE = re.compile(r"^(\d+)([KMGTPE]?)$", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}


def parse_size(text):
    """``256M`` -> bytes (memparse's suffixes); None when it is not a size."""
    m = _SIZE.match(text.strip())
    if not m:
        return None
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def crashkernel_bytes(value, ram):
    """Bytes ``crashkernel=<value>`` reserves on a host with ``ram`` bytes of RAM, as the kernel's
    parse_crashkernel() reads it: ``size[@offset]``, ``size,high|low``, or ranges
    ``start-[end]:size[,...][@offset]`` (the range holding the RAM wins; none: 0).  None when the
    value is not one of these (``auto`` of old RHEL kernels, or a typo)."""
    value = value.strip()
    if not value:
        return None
    body = value.split("@", 1)[0]
    if ":" not in body:
        return parse_size(body.split(",", 1)[0])
    for item in body.split(","):
        span, sep, size = item.partition(":")
        start, dash, end = span.partition("-")
        low, high, amount = parse_size(start), parse_size(end) if end else None, parse_size(size)
        if not sep or not dash or low is None or amount is None or (end and high is None):
            return None
        if low <= ram and (high is None or ram < high):
            return amount
    return 0


def suggest(needed):
    """A crashkernel= size holding ``needed`` bytes: ``"320M"``."""
    return "%dM" % (align_up(needed, SUGGEST_STEP) >> 20)


def estimate(ram, kernel_bytes, initrd_bytes, initrd_plain=0, page_size=4096):
    """The capture environment's needs on a host with ``ram`` bytes of RAM: a plain dict of the
    parts and ``needed`` (bytes), with ``suggested_crashkernel``."""
    pages = (ram + page_size - 1) // page_size
    bitmaps = align_up((pages * BITMAP_BITS_PER_PAGE + 7) // 8, page_size)
    kernel = align_up(kernel_bytes, page_size)
    initrd = align_up(initrd_bytes, page_size)
    unpacked = min(initrd_plain, initrd_bytes) + (initrd_bytes - min(initrd_plain, initrd_bytes)) * INITRD_UNPACK_FACTOR
    booting = kernel + initrd + unpacked
    saving = kernel + CAPTURE_USERSPACE + bitmaps
    needed = max(booting, saving) + LOADER_OVERHEAD
    return {
        "ram": ram,
        "page_size": page_size,
        "kernel": kernel,
        "initrd": initrd,
        "initrd_unpacked": unpacked,
        "makedumpfile_bitmaps": bitmaps,
        "capture_userspace": CAPTURE_USERSPACE,
        "loader": LOADER_OVERHEAD,
        "booting": booting,
        "saving": saving,
        "needed": needed,
        "suggested_crashkernel": suggest(needed),
    }


def describe(est):
    """The parts of an estimate in words, for messages."""
    return ("kernel %s, initrd %s unpacking to about %s while it boots; then %s for the capture userspace and %s "
            "for makedumpfile's page bitmaps over %s of RAM; %s for the loader"
            % (mib(est["kernel"]), mib(est["initrd"]), mib(est["initrd_unpacked"]), mib(est["capture_userspace"]),
               mib(est["makedumpfile_bitmaps"]), _gib(est["ram"]), mib(est["loader"])))


def _gib(n):
    return "%.1f GiB" % (n / float(1 << 30))


def check_reservation(est, value):
    """Compare ``crashkernel=<value>`` with the estimate: a dict (``value``, ``bytes``, ``enough``,
    ``message``); ``enough`` is None when the value cannot be read."""
    reserved = crashkernel_bytes(value, est["ram"])
    out = {"value": value, "bytes": reserved, "enough": None, "message": None}
    if reserved is None:
        out["message"] = ("crashkernel=%s is not a size this check reads (size, size@offset, size,high or "
                          "start-end:size ranges); not checked" % value)
        return out
    out["enough"] = reserved >= est["needed"]
    if not out["enough"]:
        out["message"] = (
            "crashkernel=%s reserves %s on this host, but its capture kernel needs about %s (%s): the capture "
            "would run out of memory and lose the dump; use crashkernel=%s"
            % (value, mib(reserved), mib(est["needed"]), describe(est), est["suggested_crashkernel"]))
    return out


def require_reservation(est, value):
    """PlanError with the size to use when ``crashkernel=<value>`` is too small for ``est``."""
    checked = check_reservation(est, value)
    if checked["enough"] is False:
        raise PlanError(checked["message"])
    return checked
