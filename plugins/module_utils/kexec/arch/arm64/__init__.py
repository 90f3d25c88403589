# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""arm64 (aarch64): the Image (bare, behind its EFI stub, gzip-compressed or inside EFI zboot),
the next kernel's device tree, crash kernels described in /chosen, our own purgatory, and the
linear and kernel-image mappings of dumps."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...core.elf import EM_AARCH64
from ...core.entropy import kernel_random
from ..base import Arch
from . import boot as _boot
from . import crash as _crash
from . import purgatory as _purgatory
from .image import Image
from .image_gz import ImageGz
from .memory import placement_map
from .vmcore import Arm64Memory
from .zboot import Zboot


class Arm64(Arch):
    """The arm64 loader parts."""

    name = "arm64"
    machines = ("aarch64",)
    elf_machine = EM_AARCH64
    default_page_size = 4096
    capture_options = _crash.DEFAULT_CAPTURE_OPTIONS
    # zboot first: its DOS header is also "MZ", and its payload, not its stub, is the kernel.
    formats = (Zboot, Image, ImageGz)
    # kexec_file_load on arm64 takes the Image, bare or with its EFI stub (kexec_image_ops).
    file_load_formats = ("Image",)

    def unrecognised(self, buf):
        head = bytes(memoryview(buf)[:4])
        what = "an ELF file (a vmlinux? pass the Image, /boot/vmlinuz-<version>)" if head == b"\x7fELF" else \
            "first bytes %s" % head.hex()
        return ("unrecognised kernel image for arm64 (%s): expected an arm64 Image (with or without its EFI stub), "
                "Image.gz or an EFI zboot image; pass the kernel the distribution installs in /boot "
                "(vmlinuz-<version>)" % what)

    def new_plan(self, host, kind, method="classic"):
        plan = super(Arm64, self).new_plan(host, kind, method)
        plan.memory_map = placement_map(host)
        return plan

    def kernel_need(self, buf):
        try:
            return self.probe(buf).need(buf)
        except Exception:  # pylint: disable=broad-except  # the load reports the real error
            return len(buf)

    def load_image(self, buf, initrd, cmdline, host, plan, crash=None, entropy=kernel_random):
        fmt = self.probe(buf)
        return _boot.load(fmt.kernel(buf), initrd, cmdline, host, plan, crash=crash, entropy=entropy)

    def prepare_crash(self, plan, host, cmdline):
        return _crash.prepare(plan, host, cmdline)

    def kcore_layout(self, data):
        return _crash.parse_kcore_layout(data)

    def link_purgatory(self, plan, image, crash=None):
        return _purgatory.link(plan, image.entry, image.dtb_addr, console=image.console)

    def vmcore_memory(self, core, info):
        return Arm64Memory(core, info)


ARCH = Arm64()
