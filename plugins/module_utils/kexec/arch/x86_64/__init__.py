# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""x86_64: bzImage and ELF vmlinux through the 64-bit boot protocol, the zero page, the 640 KiB
crash backup region and capture e820, our own purgatory, page-table walks in dumps."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...core.elf import EM_X86_64
from ...core.entropy import kernel_random
from ..base import Arch
from . import crash as _crash
from . import purgatory as _purgatory
from .bzimage import BzImage
from .pagewalk import X86_64Memory
from .vmlinux import Vmlinux

#: KEXEC_DESTINATION_MEMORY_LIMIT is MAXMEM - 1: MAXMEM is 1 << 46 under 4-level paging and
#: 1 << 52 under 5-level (arch/x86/include/asm/pgtable_64_types.h).
LIMIT_4LEVEL = (1 << 46) - 1
LIMIT_5LEVEL = (1 << 52) - 1


class X86_64(Arch):
    """The x86_64 loader parts."""

    name = "x86_64"
    machines = ("x86_64",)
    elf_machine = EM_X86_64
    default_page_size = 4096
    capture_options = _crash.DEFAULT_CAPTURE_OPTIONS
    formats = (BzImage, Vmlinux)
    # kexec_file_load on x86 takes only a 64-bit bzImage (kexec_bzImage64_ops).
    file_load_formats = ("bzImage",)

    def page_size(self, host):
        # x86_64 has one base page size.
        return 4096

    def destination_limit(self, host):
        return LIMIT_5LEVEL if getattr(host, "la57", False) else LIMIT_4LEVEL

    def unrecognised(self, buf):
        head = bytes(memoryview(buf)[:4])
        if head == b"\x7fELF":
            return ("the ELF file is not an x86_64 executable vmlinux; pass an x86 bzImage "
                    "(/boot/vmlinuz-<version>) or an x86_64 vmlinux")
        return ("unrecognised kernel image (first bytes %s): expected an x86 bzImage or an x86_64 ELF vmlinux; "
                "pass the kernel the distribution installs in /boot (vmlinuz-<version>)" % head.hex())

    def check_file_load(self, fmt, buf, host):
        # The image's own consistency first (a damaged bzImage is damaged, whatever else), then
        # the format and signature rules every arch has.
        if hasattr(fmt, "check_file_load"):
            fmt.check_file_load(buf, host)
        super(X86_64, self).check_file_load(fmt, buf, host)

    def kernel_need(self, buf):
        # A bzImage decompresses in place and needs init_size bytes; anything else its size.
        if BzImage.probe(buf):
            try:
                header = BzImage.parse(buf).header
            except Exception:  # pylint: disable=broad-except  # the load reports the real error
                return len(buf)
            return max(header.init_size or 0, len(buf))
        return len(buf)

    def load_image(self, buf, initrd, cmdline, host, plan, crash=None, entropy=kernel_random):
        fmt = self.probe(buf)
        memory_map = crash.memory_map if crash is not None else None
        return fmt.load(buf, initrd, cmdline, host, plan, memory_map=memory_map, entropy=entropy)

    def prepare_crash(self, plan, host, cmdline):
        return _crash.prepare(plan, host, cmdline)

    def kcore_layout(self, data):
        return _crash.parse_kcore_layout(data)

    def link_purgatory(self, plan, image, crash=None):
        entry = getattr(image, "entry64", None)
        if entry is None:
            entry = getattr(image, "entry", None)
        backup = crash.backup if crash is not None else None
        return _purgatory.link(plan, entry, image.boot_params_addr, backup=backup)

    def vmcore_memory(self, core, info):
        return X86_64Memory(core, info)


ARCH = X86_64()
