# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What to load: the first value of the loader's one-way flow (request -> host -> image -> plan
-> purgatory -> syscall)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .errors import KexecError

KINDS = ("normal", "crash")
METHODS = ("auto", "classic", "file")


class Request:
    """Kernel and initrd paths, the final command line, kind and method, as a plain value."""

    __slots__ = ("kernel", "initrd", "cmdline", "kind", "method")

    def __init__(self, kernel, initrd=None, cmdline="", kind="normal", method="auto"):
        if kind == "preserve_context":
            # KEXEC_PRESERVE_CONTEXT (kexec jump) needs a purgatory that saves this kernel's state
            # and an image that jumps back; until that exists, say so instead of half doing it.
            raise KexecError("kind preserve_context (kexec jump, returning to this kernel) is not supported "
                             "yet; load a normal kernel (kind normal) or a crash kernel (kind crash)")
        if kind not in KINDS:
            raise KexecError("unknown kind %r: use one of %s" % (kind, ", ".join(KINDS)))
        if method not in METHODS:
            raise KexecError("unknown method %r: use one of %s" % (method, ", ".join(METHODS)))
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
