# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ppc64le (pseries and other Book3S-64 platforms): ELF vmlinux kernels, a device tree flattened
from the live one, our own purgatory, and capture kernels told by __run_at_load to run in the
crash region.  Debian's ppc64el kernels lack CONFIG_KEXEC_FILE: kexec_load is the way."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...core.elf import EM_PPC64
from ...core.entropy import kernel_random
from ...core.memmap import align_up
from ...core.plan import Plan
from ..base import Arch, _totalram_pages
from . import boot as _boot
from . import crash as _crash
from . import purgatory as _purgatory
from .elf_kernel import Ppc64Kernel
from .memory import Ppc64Memory
from .platform import PlatformFacts


class Ppc64le(Arch):
    """The ppc64le loader parts."""

    name = "ppc64le"
    machines = ("ppc64le",)
    elf_machine = EM_PPC64
    # Debian's 6.1, RHEL's and SUSE's ppc64le kernels use 64 KiB pages (Debian's 6.12 uses 4 KiB).
    default_page_size = 65536
    capture_options = _crash.DEFAULT_CAPTURE_OPTIONS
    formats = (Ppc64Kernel,)
    # kexec_file_load on ppc64 takes ELF kernels (kexec_elf64_ops), where the kernel has it at all.
    file_load_formats = ("elf-ppc64",)

    def unrecognised(self, buf):
        head = bytes(memoryview(buf)[:4])
        if head == b"\x7fELF":
            return ("the ELF file is not a little-endian 64-bit PowerPC kernel; pass /boot/vmlinux-<version> of a "
                    "ppc64le kernel")
        return ("unrecognised kernel image for ppc64le (first bytes %s): ppc64le kernels are ELF files; pass the "
                "kernel the distribution installs as /boot/vmlinux-<version>" % head.hex())

    def new_plan(self, host, kind, method="classic"):
        # The memory map the segments may use: RAM above the running kernel and below the RMA, with
        # firmware memory left alone (platform.py).
        page = self.page_size(host)
        placeable = PlatformFacts.read(host.sysroot or "/").placeable(host.memory_map)
        return Plan(placeable, kind=kind, crash_region=host.crash_region, arch=self.name, method=method,
                    totalram_pages=_totalram_pages(host, page), page_size=page,
                    destination_limit=self.destination_limit(host))

    def kernel_need(self, buf):
        # The PT_LOAD's memory size (text, data and bss), which the crash region must hold.
        if Ppc64Kernel.probe(buf):
            try:
                return Ppc64Kernel.parse(buf).memsz
            except Exception:  # pylint: disable=broad-except  # the load reports the real error
                return len(buf)
        return len(buf)

    def load_image(self, buf, initrd, cmdline, host, plan, crash=None, entropy=kernel_random):
        self.probe(buf)
        return _boot.load(buf, initrd, cmdline, host, plan, crash=crash, entropy=entropy)

    def prepare_crash(self, plan, host, cmdline):
        return _crash.prepare(plan, host, cmdline)

    def link_purgatory(self, plan, image, crash=None):
        backup = crash.backup if crash is not None else None
        facts = image.platform
        return _purgatory.link(plan, image, min_addr=align_up(facts.kernel_end, plan.page_size),
                               max_addr=facts.rma_top - 1, backup=backup)

    def vmcore_memory(self, core, info):
        return Ppc64Memory(core, info)


ARCH = Ppc64le()
