# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which UART the purgatory may write to when it refuses to boot: the running kernel's console.

Read from the device tree's ``/chosen/stdout-path`` (QEMU's virt machine: the PL011 at
0x09000000), else, on ACPI hosts whose tree is the EFI stub's and names no console, from the
ACPI SPCR table (``/sys/firmware/acpi/tables/SPCR``, root-only).  A PL011 or an 8250/16550 is
something the purgatory can drive with the MMU off; any other console, or none, means no
console: the purgatory then halts silently rather than poke an unknown device.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...errors import ImageFormatError

NONE, PL011, NS16550 = 0, 1, 2
KIND_NAMES = {NONE: "none", PL011: "pl011", NS16550: "ns16550"}

_PL011_COMPATIBLE = ("arm,pl011", "arm,sbsa-uart")
_NS16550_COMPATIBLE = ("ns16550a", "ns16550", "ns16450", "ns8250", "snps,dw-apb-uart", "brcm,bcm2835-aux-uart",
                       "marvell,armada-38x-uart", "nvidia,tegra20-uart")
SPCR = "sys/firmware/acpi/tables/SPCR"
# SPCR (Microsoft's Serial Port Console Redirection table): interface type at 36, the base
# address as an ACPI Generic Address Structure at 40 (space id, bit width, bit offset, access
# size, u64 address).  Interface types: 0 16550, 1 16450, 3 PL011, 0xe SBSA 32-bit, 0xf SBSA,
# 0x12 16550 with a GAS-described access width.
_SPCR_PL011 = (0x03, 0x0E, 0x0F)
_SPCR_16550 = (0x00, 0x01, 0x12)
_GAS_SYSTEM_MEMORY = 0


class Console:
    """A UART the purgatory can drive: kind, MMIO base, register stride (log2) and access width."""

    __slots__ = ("kind", "base", "shift", "width", "source")

    def __init__(self, kind=NONE, base=0, shift=0, width=1, source=None):
        self.kind = kind
        self.base = base
        self.shift = shift
        self.width = width
        self.source = source

    def to_dict(self):
        return {"kind": KIND_NAMES[self.kind], "base": self.base, "reg_shift": self.shift, "io_width": self.width,
                "source": self.source}

    def __eq__(self, other):
        return isinstance(other, Console) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "Console(%s at %#x)" % (KIND_NAMES[self.kind], self.base)


SILENT = Console()


def _u32_prop(node, name, default):
    prop = node.prop(name)
    try:
        return prop.u32() if prop is not None else default
    except ImageFormatError:
        return default


def from_tree(tree):
    """The Console ``/chosen/stdout-path`` names, or None (no path, unknown device, no address)."""
    path = tree.stdout_path()
    if path is None:
        return None
    node = tree.node(path)
    compatible = node.prop("compatible")
    try:
        names = compatible.strings() if compatible is not None else []
        regs = tree.reg(path)
    except ImageFormatError:
        return None
    # Only devices on the root bus or behind identity "ranges" have their reg as a CPU address.
    if not regs or path.count("/") > 1 and not _identity_bus(tree, path):
        return None
    base = regs[0][0]
    if any(n in _PL011_COMPATIBLE for n in names):
        return Console(PL011, base, 2, 4, "device tree %s" % path)
    if any(n in _NS16550_COMPATIBLE for n in names):
        shift = _u32_prop(node, "reg-shift", 0)
        width = _u32_prop(node, "reg-io-width", 1)
        if shift > 3 or width not in (1, 4):
            return None
        return Console(NS16550, base, shift, width, "device tree %s" % path)
    return None


def _identity_bus(tree, path):
    """True when every bus between the root and ``path`` has an empty ``ranges`` (1:1 mapping)."""
    parts = [p for p in path.split("/") if p][:-1]
    for depth in range(1, len(parts) + 1):
        bus = tree.node("/" + "/".join(parts[:depth]))
        ranges = bus.prop("ranges") if bus is not None else None
        if ranges is None or ranges.value:
            return False
    return True


def from_spcr(data):
    """The Console an ACPI SPCR table describes, or None."""
    if not data or len(data) < 52 or data[:4] != b"SPCR":
        return None
    kind = data[36]
    space, bit_width, _bit_offset, access_size, address = struct.unpack_from("<BBBBQ", data, 40)
    if space != _GAS_SYSTEM_MEMORY or not address:
        return None
    if kind in _SPCR_PL011:
        return Console(PL011, address, 2, 4, "ACPI SPCR")
    if kind in _SPCR_16550:
        # Access size 3 (dword) or a 32-bit register width means 32-bit registers, 4 bytes apart.
        wide = access_size == 3 or bit_width == 32
        return Console(NS16550, address, 2 if wide else 0, 4 if wide else 1, "ACPI SPCR")
    return None


def for_host(host, tree):
    """The purgatory's console on ``host`` whose device tree is ``tree``: stdout-path, else SPCR,
    else SILENT."""
    found = from_tree(tree)
    if found is None and getattr(host, "sysroot", None) and hasattr(host, "tree"):
        found = from_spcr(host.tree().read_bytes(SPCR))
    return found or SILENT
