# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the running kernel's security policy says about kexec: lockdown, Secure Boot,
kexec_load_disabled, and which kexec syscalls its build has."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import HostError
from .sysroot import LISTING

LOCKDOWN = "sys/kernel/security/lockdown"
SECURE_BOOT_VAR = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0b98c3b0e8c"


def parse_lockdown(text, where=LOCKDOWN):
    """The bracketed mode of the lockdown file ("none [integrity] confidentiality"), or None."""
    if text is None:
        return None
    dummy, sep, rest = text.partition("[")
    word, sep2, dummy = rest.partition("]")
    if not sep or not sep2 or not word.strip():
        raise HostError("%s holds %r, without a [bracketed] mode; the file is corrupted (record the host tree "
                        "again)" % (where, text.strip()[:60]))
    return word.strip()


def lockdown_mode(host):
    """'none', 'integrity', 'confidentiality' or None (unknown) from a host value (a Host, or a
    plain dict of its fields)."""
    mode = host.get("lockdown") if isinstance(host, dict) else getattr(host, "lockdown", None)
    if mode is None:
        return None
    mode = str(mode).strip()
    if "[" in mode:  # raw /sys/kernel/security/lockdown: "none [integrity] confidentiality"
        mode = mode[mode.index("[") + 1:mode.index("]")]
    return mode or None


def read_secure_boot(tree):
    """True/False from the SecureBoot efivar; None when the variable cannot be read."""
    var = tree.read_bytes(SECURE_BOOT_VAR)
    if var is None:
        return None
    # efivarfs: 4 bytes of attributes, then the one-byte value.
    if len(var) != 5:
        raise HostError("%s is %d bytes, expected 5; the efivar is corrupted" % (tree.path(SECURE_BOOT_VAR), len(var)))
    return var[4] == 1


def kernel_config(tree, release):
    """{CONFIG_NAME: value} of boot/config-<release>, or None when it is not installed."""
    if not release or "/" in release:
        return None
    text = tree.read_text("boot/config-" + release, limit=LISTING)
    if text is None:
        return None
    opts = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            opts[key] = value.strip()
    return opts


def offered_syscalls(config):
    """Which kexec syscalls the running kernel was built with, from its config (None: unknown,
    the syscall layer then finds out by trying)."""
    if config is None:
        return None
    return {
        "kexec_load": config.get("CONFIG_KEXEC") == "y",
        "kexec_file_load": config.get("CONFIG_KEXEC_FILE") == "y",
        "kexec_sig_force": config.get("CONFIG_KEXEC_SIG_FORCE") == "y",
    }
