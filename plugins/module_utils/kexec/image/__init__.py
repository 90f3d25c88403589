"""Kernel image formats, one module each, with the kexec-tools file_type pattern.

Each format class has ``name``, ``probe(buf) -> bool`` (cheap, never raises), ``parse(buf)`` and
``load(buf, initrd, cmdline, host, plan, ...) -> LoadedImage``.  ``probe_image`` picks the first
format that recognises a buffer, so callers never guess from file names.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import ImageFormatError
from .bzimage import BzImage, LoadedImage, SetupHeader
from .vmlinux import Vmlinux

#: Formats in probe order.  bzImage first: it is what distributions install.
FORMATS = (BzImage, Vmlinux)


def probe_image(buf, arch="x86_64"):
    """The format class for ``buf``; ImageFormatError naming what it looks like otherwise."""
    if arch not in ("x86_64",):
        raise ImageFormatError("no image formats for architecture %s yet (x86_64 only)" % arch)
    for fmt in FORMATS:
        if fmt.probe(buf):
            return fmt
    head = bytes(memoryview(buf)[:4])
    if head == b"\x7fELF":
        raise ImageFormatError("ELF file is not an x86_64 executable vmlinux; cannot load it")
    raise ImageFormatError("unrecognised kernel image (first bytes %s): expected an x86 bzImage "
                           "or an x86_64 ELF vmlinux" % head.hex())


__all__ = ["FORMATS", "BzImage", "LoadedImage", "SetupHeader", "Vmlinux", "probe_image"]
