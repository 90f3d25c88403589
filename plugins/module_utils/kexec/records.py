# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the kexec_load module loaded, remembered in /run so a rerun can tell "already loaded".

One JSON file per kind (``/run/fleetboot-kexec/normal.json``, ``crash.json``): the paths and
sha256 of kernel, initrd and command line, the method and the boot_id.  /run is cleared by every
boot, and the boot_id is checked too, so a record never outlives the image it describes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import json
import os
import re
import tempfile

from .errors import KexecError
from .host.sysroot import as_sysroot

BOOT_ID = "proc/sys/kernel/random/boot_id"
RECORD_DIR = "run/fleetboot-kexec"
CHECKSUM = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
#: The fields that must match for a record to describe what is wanted now.
MATCH_KEYS = ("kernel_sha256", "initrd_sha256", "cmdline_sha256", "type", "boot_id")


def read_boot_id(sysroot):
    """This boot's id (/proc/sys/kernel/random/boot_id), or None."""
    text = as_sysroot(sysroot).read_text(BOOT_ID)
    return (text or "").strip() or None


def record_path(sysroot, kind):
    return os.path.join(sysroot, RECORD_DIR, kind + ".json")


def read_record(sysroot, kind):
    """The record for ``kind``, or None when there is none (or it is not a JSON object)."""
    text = as_sysroot(sysroot).read_text(os.path.join(RECORD_DIR, kind + ".json"))
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def write_record(sysroot, kind, record):
    """Write the record atomically (a reader never sees half of it)."""
    directory = os.path.join(sysroot, RECORD_DIR)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    fd, tmp = tempfile.mkstemp(prefix="." + kind + ".", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.rename(tmp, record_path(sysroot, kind))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_record(sysroot, kind):
    try:
        os.unlink(record_path(sysroot, kind))
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise


def is_loaded(host, kind):
    return bool(host.kexec_crash_loaded if kind == "crash" else host.kexec_loaded)


def still_loaded(record, wanted, host, kind, method):
    """True when ``record`` describes ``wanted`` and the kernel still holds that image."""
    if record is None or not is_loaded(host, kind) or not wanted["boot_id"]:
        return False
    if any(record.get(k) != wanted[k] for k in MATCH_KEYS):
        return False
    return method == "auto" or record.get("method") == method


def loaded_record(sysroot, kind, boot_id, loaded):
    """The record for ``kind`` if it describes what is loaded now (same boot), else None."""
    if not loaded or not boot_id:
        return None
    record = read_record(sysroot, kind)
    if record is None or record.get("boot_id") != boot_id:
        return None
    return record


def cmdline_sha256(cmdline):
    return hashlib.sha256(cmdline.encode("utf-8", "surrogateescape")).hexdigest()


def verify_checksum(what, path, expected, actual):
    """Raise KexecError unless ``expected`` (sha256:<hex>, or None) matches ``actual``."""
    if expected is None:
        return
    match = CHECKSUM.match(expected.strip())
    if not match:
        raise KexecError("%s_checksum %r is not of the form sha256:<64 hex digits>; write it as "
                         "sha256:<the output of sha256sum>" % (what, expected))
    if match.group(1).lower() != actual:
        raise KexecError("%s %s has checksum sha256:%s, but %s_checksum expects sha256:%s; the file is not "
                         "the one you meant (replaced or corrupted): check the path or the checksum; "
                         "nothing was loaded" % (what, path, actual, what, match.group(1).lower()))
