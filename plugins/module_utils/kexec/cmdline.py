# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel command lines: split and join them as the kernel does, derive the next kernel's from the
running one's, edit them (append, remove, capture options) and encode them for the kernel.

Every place that builds a command line (the CLI, the kexec_load module, crash preparation) goes
through here, so the rules are the same everywhere.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .errors import KexecError

#: Options that describe the *running* kernel's crash setup or boot loader, not the next kernel.
REUSE_DROP = ("BOOT_IMAGE=", "crashkernel=", "elfcorehdr=", "kexec_jump_back_entry=")


class CmdlineError(KexecError):
    """A command line the kernel would misread (NUL byte, bytes that are not text)."""


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


def join_cmdline(*parts):
    """Non-empty parts joined by single spaces."""
    return " ".join(p.strip() for p in parts if p and p.strip())


def reuse_cmdline(current, kind="normal"):
    """The running kernel's command line minus what only describes this boot: BOOT_IMAGE= (the
    boot loader's), crashkernel= (a crash kernel must not reserve again; a normal kernel keeps it
    so the next boot reserves the crash region again), elfcorehdr=, kexec_jump_back_entry=."""
    out = []
    for word in split_cmdline(current):
        if any(word.startswith(p) for p in REUSE_DROP):
            if kind == "normal" and word.startswith("crashkernel="):
                out.append(word)
            continue
        out.append(word)
    return " ".join(out)


def edit_cmdline(base, remove=(), append=()):
    """``base`` minus ``remove`` (a name drops name and name=*, name=value only that exact word),
    plus ``append`` (words already present are not added again)."""
    words = split_cmdline(base)
    for item in remove:
        for name in split_cmdline(item):
            if "=" in name:
                words = [w for w in words if w != name]
            else:
                words = [w for w in words if w != name and w.split("=", 1)[0] != name]
    for item in append:
        for word in split_cmdline(item):
            if word not in words:
                words.append(word)
    return " ".join(words)


def add_capture_options(cmdline, options):
    """``cmdline`` with each word of ``options`` appended unless the same option (by name, or
    the word itself for flags) is already there: the user's own ``nr_cpus=2`` wins."""
    words = split_cmdline(cmdline)
    names = set(w.split("=", 1)[0] for w in words)
    for word in split_cmdline(options):
        if word.split("=", 1)[0] not in names:
            words.append(word)
            names.add(word.split("=", 1)[0])
    return " ".join(words)


def set_option(cmdline, name, value):
    """``cmdline`` with every ``name=...`` word replaced by one ``name=value`` at the end."""
    words = [w for w in split_cmdline(cmdline) if not w.startswith(name + "=")]
    words.append("%s=%s" % (name, value))
    return " ".join(words)


def encode_cmdline(cmdline, what="kernel command line"):
    """The command line as the bytes the kernel gets (no trailing NUL).

    The kernel stops reading at a NUL, so one inside is refused; text that is not valid UTF-8
    (a str carrying surrogate escapes of raw bytes from argv) is refused too, because what the
    next kernel would read is then not what anyone can see in the plan.
    """
    if cmdline is None:
        return b""
    if isinstance(cmdline, str):
        try:
            data = cmdline.encode("utf-8")
        except UnicodeEncodeError as err:
            raise CmdlineError("the %s holds bytes that are not valid UTF-8 (at character %d); "
                               "write it in UTF-8 (kernel parameters are plain ASCII)" % (what, err.start))
    else:
        data = bytes(cmdline)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CmdlineError("the %s holds bytes that are not valid UTF-8 (at byte %d); "
                               "write it in UTF-8 (kernel parameters are plain ASCII)" % (what, err.start))
    data = data.rstrip(b"\0")
    if b"\0" in data:
        raise CmdlineError("the %s contains a NUL byte; the kernel would stop reading it there; "
                           "remove it" % what)
    return data
