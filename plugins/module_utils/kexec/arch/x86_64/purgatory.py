# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The x86_64 purgatory in a plan: where it may go and what its entry code reads.

entry.S loads its own GDT and stack, lets the shared C code verify every segment, then enters the
kernel's 64-bit entry with %rsi = the boot_params address (Documentation/arch/x86/boot.rst).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...purgatory import link_purgatory, pack_u64
from ...purgatory.linker import PurgatoryObject
from . import purgatory_blob
from .reloc import ABSOLUTE_32, RELOCATOR

KERNEL_ENTRY_SYMBOL = "fleetboot_kernel_entry"
BOOT_PARAMS_SYMBOL = "fleetboot_boot_params"
#: Lowest address for the purgatory: the first pages hold real-mode data (BIOS data area, the
#: trampoline) that the kernel's own kexec_file loader keeps clear too (0x3000).
MIN_ADDR = 0x3000
#: Ceiling when the object has 32-bit absolute relocations (R_X86_64_32/32S sign- or
#: zero-extend, so the code must sit below 2 GiB).  Our object uses only RIP-relative and 64-bit
#: relocations and may go anywhere.
MAX_ADDR_32BIT_RELOCS = 0x7FFFFFFF


def load_object():
    """The shipped x86_64 purgatory object, parsed."""
    return PurgatoryObject(purgatory_blob.object_bytes(), RELOCATOR)


def link(plan, entry, boot_params, obj=None, backup=None):
    """Link the purgatory into ``plan`` (last: it hashes every segment already there) so that it
    enters ``entry`` (the kernel's 64-bit entry) with %rsi = ``boot_params``; see
    purgatory.link_purgatory for ``backup``.  Returns the LinkedPurgatory."""
    if obj is None:
        obj = load_object()
    values = {KERNEL_ENTRY_SYMBOL: pack_u64("kernel entry", entry),
              BOOT_PARAMS_SYMBOL: pack_u64("boot_params address", boot_params)}
    max_addr = MAX_ADDR_32BIT_RELOCS if obj.relocation_types() & ABSOLUTE_32 else None
    return link_purgatory(plan, obj, values, min_addr=MIN_ADDR, max_addr=max_addr, backup=backup)
