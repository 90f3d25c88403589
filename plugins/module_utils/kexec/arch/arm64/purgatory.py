# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The arm64 purgatory in a plan: what its entry code reads.

entry.S takes its own stack, lets the shared C code verify every segment (MMU and D-cache off,
as the kernel leaves them), then enters the Image at its first byte with x0 = the device tree's
address and x1..x3 = 0 (Documentation/arch/arm64/booting.rst).  Its references are all
PC-relative, so it may go anywhere in RAM.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...purgatory import link_purgatory, pack_u64
from ...purgatory.linker import PurgatoryObject
from . import console as _console
from . import purgatory_blob
from .reloc import RELOCATOR

KERNEL_ENTRY_SYMBOL = "fleetboot_kernel_entry"
DTB_SYMBOL = "fleetboot_dtb"
CONSOLE_SYMBOLS = ("fleetboot_console_kind", "fleetboot_console_base", "fleetboot_console_shift",
                   "fleetboot_console_width")


def load_object():
    """The shipped arm64 purgatory object, parsed."""
    return PurgatoryObject(purgatory_blob.object_bytes(), RELOCATOR)


def link(plan, entry, dtb, console=None, obj=None):
    """Link the purgatory into ``plan`` (last: it hashes every segment already there) so that it
    enters ``entry`` with x0 = ``dtb`` and writes its refusal to ``console`` (a console.Console;
    None or SILENT: it stays silent).  Returns the LinkedPurgatory."""
    if obj is None:
        obj = load_object()
    console = console or _console.SILENT
    values = {KERNEL_ENTRY_SYMBOL: pack_u64("kernel entry", entry), DTB_SYMBOL: pack_u64("device tree address", dtb)}
    for name, value in zip(CONSOLE_SYMBOLS, (console.kind, console.base, console.shift, console.width)):
        values[name] = pack_u64("console setting", value)
    return link_purgatory(plan, obj, values)
