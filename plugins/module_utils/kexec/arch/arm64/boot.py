# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where an arm64 Image, its initrd and its device tree go (Documentation/arch/arm64/booting.rst).

- the **Image** text_offset bytes above a 2 MiB aligned base, with image_size bytes for it, as
  low as the memory allows (older kernels cannot use RAM below their image; with flags bit 3
  clear the base belongs near the start of DRAM; with it set, below 2**48);
- the **initrd** inside the 1 GiB aligned window of at most 32 GiB that also covers the Image,
  above the Image when it fits there;
- the **device tree** 8-byte aligned, at most 2 MiB and inside one 2 MiB block, within 512 MiB
  of the Image's base when it fits there (what kernels before 4.2 required), else in the window.

Every format ends here with a KernelImage; the result says where the purgatory must jump (the
Image's first byte) and what to put in x0 (the device tree's address).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...core.entropy import kernel_random
from ...core.memmap import align_down
from ...errors import PlanError
from . import console as _console
from . import dtb as _dtb
from .header import BASE_ALIGN, PHYS_48BIT_LIMIT

#: booting.rst: the initrd lies in "a 1 GB aligned physical memory window of up to 32 GB in
#: size that fully covers the kernel Image as well".
WINDOW_ALIGN = 1 << 30
WINDOW_SIZE = 32 << 30
#: Kernels before 4.2 wanted the DTB "within the 512 MB region starting at text_offset bytes
#: below the kernel Image".
LEGACY_DTB_WINDOW = 512 << 20

RNG_WARNING = ("the running kernel's RNG is not initialized yet, so the next kernel gets no kaslr-seed or rng-seed "
               "and may wait for entropy early in its boot")


class LoadedImage:
    """What placing an arm64 kernel produced: where it is, its boot data, the purgatory's inputs."""

    def __init__(self, fmt, header, kernel_addr, kernel_memsz, dtb_addr, dtb_size, initrd_addr=None, initrd_size=0,
                 cmdline=b"", console=None, removed=(), warnings=()):
        self.format = fmt
        self.header = header
        self.kernel_addr = kernel_addr
        self.kernel_memsz = kernel_memsz
        self.dtb_addr = dtb_addr
        self.dtb_size = dtb_size
        self.initrd_addr = initrd_addr
        self.initrd_size = initrd_size
        self.cmdline = bytes(cmdline)
        self.console = console or _console.SILENT
        self.removed = list(removed)
        self.warnings = list(warnings)

    @property
    def entry(self):
        """booting.rst: the Image is called at its first byte (code0)."""
        return self.kernel_addr

    def to_dict(self):
        return {"format": self.format, "header": self.header.to_dict(), "kernel_addr": self.kernel_addr,
                "kernel_memsz": self.kernel_memsz, "dtb_addr": self.dtb_addr, "dtb_size": self.dtb_size,
                "initrd_addr": self.initrd_addr, "initrd_size": self.initrd_size,
                "cmdline": self.cmdline.decode("utf-8", "replace"), "console": self.console.to_dict(),
                "removed_from_running_tree": list(self.removed), "warnings": list(self.warnings)}

    def __repr__(self):
        return "LoadedImage(%s at %#x, dtb %#x)" % (self.format, self.kernel_addr, self.dtb_addr)


def _add_preferring(plan, what, buf, memsz, align, preferred, fallback):
    """add_segment bottom-up within ``preferred`` (lo, hi inclusive), else within ``fallback``."""
    try:
        return plan.add_segment(what, buf, memsz=memsz, align=align, min_addr=preferred[0], max_addr=preferred[1])
    except PlanError:
        return plan.add_segment(what, buf, memsz=memsz, align=align, min_addr=fallback[0], max_addr=fallback[1])


def seeds(entropy):
    """(kaslr-seed as an int or None, rng-seed bytes or None, warnings) from ``entropy(n)``."""
    if entropy is None:
        return None, None, []
    kaslr = entropy(_dtb.KASLR_SEED_SIZE)
    rng = entropy(_dtb.RNG_SEED_SIZE)
    if kaslr is None or rng is None:
        return None, None, [RNG_WARNING]
    return int.from_bytes(bytes(kaslr), "big"), bytes(rng), []


def load(kimage, initrd, cmdline, host, plan, crash=None, entropy=kernel_random):
    """Add the kernel, initrd and device-tree segments of ``kimage`` (a KernelImage) to ``plan``;
    return the LoadedImage.  ``crash`` is the CrashSetup of a crash load (its core header and the
    capture kernel's usable memory go into /chosen)."""
    cmd = _dtb.check_cmdline(cmdline)
    running_blob = getattr(host, "fdt", None)
    tree = _dtb.running_tree(host)
    console = _console.for_host(host, tree)
    header = kimage.header

    max_kernel = PHYS_48BIT_LIMIT - 1 if header.anywhere else None
    kernel = plan.add_segment("kernel", kimage.data, memsz=header.image_size, align=BASE_ALIGN, offset=header.text_offset,
                              max_addr=max_kernel)
    base = kernel.mem - header.text_offset
    window = (align_down(base, WINDOW_ALIGN), align_down(base, WINDOW_ALIGN) + WINDOW_SIZE - 1)
    if kernel.end - 1 > window[1]:
        raise PlanError("the kernel at %#x-%#x does not fit one 32 GiB window with its initrd (booting.rst); this "
                        "memory map is unusual: report it" % (kernel.mem, kernel.end))
    above = (kernel.end, window[1])

    initrd_addr, initrd_size = None, 0
    if initrd is not None and len(initrd):
        seg = _add_preferring(plan, "initrd", memoryview(initrd), len(initrd), plan.page_size, above, window)
        initrd_addr, initrd_size = seg.mem, len(initrd)

    kaslr, rng, warnings = seeds(entropy)
    elfcorehdr = usable = None
    if crash is not None:
        elfcorehdr = (crash.elfcorehdr_addr, crash.elfcorehdr_size)
        usable = [(r.start, r.size) for r in crash.memory_map]
    tree, removed = _dtb.next_tree(tree, len(running_blob), cmd, initrd=(initrd_addr, initrd_size) if initrd_size else None,
                                   kaslr_seed=kaslr, rng_seed=rng, elfcorehdr=elfcorehdr, usable_memory=usable)
    blob = _dtb.to_blob(tree)
    legacy = (kernel.end, min(window[1], base + LEGACY_DTB_WINDOW - 1))
    dtb = _add_preferring(plan, "dtb", blob, len(blob), _dtb.alignment(len(blob)), legacy, window)
    return LoadedImage(kimage.format, header, kernel.mem, kernel.memsz, dtb.mem, len(blob), initrd_addr, initrd_size,
                       cmd, console, removed, warnings)
