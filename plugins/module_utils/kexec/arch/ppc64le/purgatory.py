# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ppc64le purgatory in a plan: where it may go and what its entry code reads.

kexec_sequence copies the first 0x100 bytes at the entry point to address 0, where the other
CPUs go (to 0x60, big-endian, with their physical number in r3) and wait for the new kernel to
call them.  Those bytes must be the next kernel's own first 0x100 bytes, its secondary hold loop,
so the loader writes them into purgatory_start after its first word, the branch to the master
code (fleetboot_kernel_head).  For a crash load of a kernel with the "run0" magic the copy
carries __run_at_load = 1 at 0x5c, and purgatory writes the same word into the loaded kernel,
where __after_prom_start reads it (lwz r7,0x5c(r26): the image it runs from).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...purgatory import link_purgatory, pack_u64
from ...purgatory.linker import PurgatoryObject
from . import purgatory_blob
from .elf_kernel import HEAD_SIZE
from .reloc import RELOCATOR

KERNEL_HEAD_SYMBOL = "fleetboot_kernel_head"
KERNEL_SYMBOL = "fleetboot_kernel"
ENTRY_SYMBOL = "fleetboot_kernel_entry"
DEVICE_TREE_SYMBOL = "fleetboot_device_tree"
RUN_AT_LOAD_SYMBOL = "fleetboot_run_at_load"
VTERM_SYMBOL = "fleetboot_vterm"
#: purgatory_start's first word (its branch to the master code) is not part of the kernel head.
HEAD_OFFSET = 4


def load_object():
    """The shipped ppc64le purgatory object, parsed."""
    return PurgatoryObject(purgatory_blob.object_bytes(), RELOCATOR)


def link(plan, image, min_addr, max_addr, backup=None, obj=None):
    """Link the purgatory into ``plan`` (last: it hashes every segment already there) for the
    LoadedImage ``image`` (boot.py), within [min_addr, max_addr] (real-mode reachable memory
    above the running kernel).  Returns the LinkedPurgatory."""
    if obj is None:
        obj = load_object()
    if len(image.head) != HEAD_SIZE:
        raise ValueError("the kernel head must be %d bytes" % HEAD_SIZE)
    values = {KERNEL_HEAD_SYMBOL: bytes(image.head[HEAD_OFFSET:]),
              KERNEL_SYMBOL: pack_u64("kernel address", image.kernel),
              ENTRY_SYMBOL: pack_u64("kernel entry", image.entry),
              DEVICE_TREE_SYMBOL: pack_u64("device tree address", image.device_tree),
              RUN_AT_LOAD_SYMBOL: pack_u64("__run_at_load value", image.run_at_load),
              VTERM_SYMBOL: pack_u64("console vterm", image.vterm or 0)}
    return link_purgatory(plan, obj, values, min_addr=min_addr, max_addr=max_addr, backup=backup)
