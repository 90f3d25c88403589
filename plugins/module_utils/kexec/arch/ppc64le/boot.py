# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a ppc64 kernel, its initrd and its device tree go, and what purgatory needs to enter it.

Rules (machine_kexec_prepare(), kexec-tools' kexec-ppc64.c and the kernel's elf64_load()):

- no segment below the running kernel's end (the plan's memory map marks it taken, see
  platform.py) and none above the RMA: purgatory runs in real mode, where a hash-MMU LPAR
  reaches only the RMA;
- the kernel anywhere, aligned to its PT_LOAD; a normal kernel then copies itself to 0, so the
  initrd and the tree go above its landing zone [0, memsz), which it overwrites before reading
  them; a capture kernel (told by __run_at_load) stays where it is, in the crash region;
- the tree last, top-down, with its own place in its reservation block.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...core.entropy import kernel_random
from ...core.memmap import RAM, align_up
from ...errors import ImageFormatError, PlanError
from . import devicetree as _dt
from .elf_kernel import RUN_AT_LOAD_OFFSET, Ppc64Kernel, patched_head
from .platform import PlatformFacts

#: The value that makes a relocatable kernel run where it was loaded.
RUN_HERE = 1
_PLACEHOLDER = 1 << 63  # a reservation entry for the tree's own address, written once it is placed


class LoadedImage:
    """What a ppc64 load put in the plan: plain values for the report and for purgatory."""

    def __init__(self, image, kernel, entry, device_tree, device_tree_size, head, run_at_load, platform, warnings):
        self.image = image
        self.kernel = kernel
        self.entry = entry
        self.device_tree = device_tree
        self.device_tree_size = device_tree_size
        self.head = head
        self.run_at_load = run_at_load
        self.platform = platform
        self.vterm = platform.vterm
        self.warnings = warnings

    def to_dict(self):
        return {"format": self.image.name, "kernel": self.kernel, "entry": self.entry,
                "device_tree": self.device_tree, "device_tree_size": self.device_tree_size,
                "run_at_load": self.run_at_load, "vterm": self.vterm}


def load(buf, initrd, cmdline, host, plan, crash=None, entropy=kernel_random, facts=None, run_at_load=None):
    """Add the kernel, initrd and device tree segments to ``plan``; return a LoadedImage.

    ``crash`` is the CrashSetup of a crash load.  ``run_at_load`` (tests only) overrides the
    __run_at_load value a crash load writes; False leaves the image's own word.
    """
    image = Ppc64Kernel.parse(buf)
    crash_load = plan.kind == "crash"
    if crash_load:
        refusal = image.crash_refusal()
        if refusal:
            raise ImageFormatError("cannot load it as a crash kernel: %s; nothing was loaded" % refusal)
    facts = facts or PlatformFacts.read(host.sysroot or "/")
    page = plan.page_size
    top = facts.rma_top - 1
    low = align_up(facts.kernel_end, page)
    kernel = plan.add_segment("kernel", image.data(), memsz=image.segment_memsz(page), align=image.align(page),
                              min_addr=low, max_addr=top)
    # A normal kernel's first act is to copy itself to [0, memsz): nothing it still needs may lie there.
    others = low if crash_load else max(low, align_up(image.memsz, page))
    initrd_range = None
    if initrd is not None:
        seg = plan.add_segment("initrd", initrd, align=page, min_addr=others, max_addr=top)
        initrd_range = (seg.mem, seg.mem + seg.bufsz)
    warnings = []
    seed = entropy(_dt.RNG_SEED_BYTES)
    if not seed:
        warnings.append("the kernel's RNG is not initialized yet, so the next kernel gets no rng-seed and may "
                        "wait for entropy early in its boot")
    tree = _dt.read_live_tree(host.tree())
    usable, reserved, elfcorehdr = _crash_view(crash)
    _dt.prepare(tree, cmdline, initrd=initrd_range, rng_seed=seed, usable=usable, elfcorehdr=elfcorehdr)
    reservations = [(r.start, r.size) for r in facts.keep] + reserved
    if initrd_range is not None:
        reservations.append((initrd_range[0], initrd_range[1] - initrd_range[0]))
    blob = _dt.flatten(tree, reservations + [(_PLACEHOLDER, 1)])
    dtb = plan.reserve("dtb", len(blob), align=page, min_addr=others, max_addr=top, top_down=True)
    blob = _dt.flatten(tree, reservations + [(dtb.mem, len(blob))])
    dtb.set_buffer(blob)
    word = None
    if crash_load and run_at_load is not False:
        word = RUN_HERE if run_at_load is None else run_at_load
    head = patched_head(image.head(), word)
    return LoadedImage(image, kernel.mem, kernel.mem + image.entry_offset(), dtb.mem, len(blob), head,
                       word or 0, facts, warnings)


def _crash_view(crash):
    """(usable [(start, end)], reserved [(address, size)], (elfcorehdr address, size)) from a
    CrashSetup, or (None, [], None) for a normal load (or a crash load validated for the file
    method, where the kernel builds these itself)."""
    if crash is None:
        return None, [], None
    usable = [(r.start, r.end) for r in crash.memory_map if r.type == RAM]
    reserved = [(r.start, r.size) for r in crash.memory_map if r.type != RAM]
    if not usable:
        raise PlanError("the capture kernel would have no usable memory; this is a loader bug, please report it")
    return usable, reserved, (crash.elfcorehdr_addr, crash.elfcorehdr_size)


__all__ = ["LoadedImage", "load", "RUN_HERE", "RUN_AT_LOAD_OFFSET"]
