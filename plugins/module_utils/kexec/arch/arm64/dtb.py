# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The next arm64 kernel's device tree: the running kernel's own (``/sys/firmware/fdt``, the
blob it booted with) with ``/chosen`` rewritten the way the kernel's own kexec_file loader
rewrites it (of_kexec_alloc_and_setup_fdt() in drivers/of/kexec.c):

- what only described the running boot goes: the old initrd range and its memory reservation,
  the reservation of the running tree itself, ``linux,elfcorehdr`` and
  ``linux,usable-memory-range`` (a crashed kernel's), the IMA measurement buffer and its
  reservation, kexec handover (``linux,kho-*``), the used ``kaslr-seed`` (the kernel zeroes it
  after reading) and ``rng-seed`` (it erases that one);
- what describes the next boot is set: ``bootargs``, ``linux,initrd-start``/``-end`` with a
  reservation for the initrd, a fresh ``kaslr-seed`` (8 bytes) and ``rng-seed`` (128 bytes, the
  kernel's RNG_SEED_SIZE) from the running kernel's RNG; for a capture kernel
  ``linux,elfcorehdr`` and ``linux,usable-memory-range``; and the empty ``linux,booted-from-kexec``;
- everything else stays: the hardware description, the memory reservation block, and on UEFI
  hosts the ``linux,uefi-system-table`` and ``linux,uefi-mmap-*`` properties through which the
  next kernel finds the EFI memory map and the runtime services.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...cmdline import encode_cmdline
from ...core import fdt as _fdt
from ...core.memmap import align_up
from ...errors import HostError, ImageFormatError

#: COMMAND_LINE_SIZE on arm64 (arch/arm64/include/uapi/asm/setup.h): bootargs, NUL included.
COMMAND_LINE_SIZE = 2048
#: booting.rst: "The device tree blob (dtb) must be placed on an 8-byte boundary and must not
#: exceed 2 megabytes in size."
MAX_FDT_SIZE = 2 << 20
KASLR_SEED_SIZE = 8
RNG_SEED_SIZE = 128
#: /chosen properties that belong to one boot only (drivers/of/kexec.c removes or replaces each).
STALE_CHOSEN = _fdt.CHOSEN_PROPERTIES + ("linux,ima-kexec-buffer", "linux,kho-fdt", "linux,kho-scratch")
_RANGE_PROPERTIES = ("linux,elfcorehdr", "linux,ima-kexec-buffer")

_PAGE = 4096


def running_tree(host):
    """The running kernel's device tree (Host.fdt, read from /sys/firmware/fdt) as a DeviceTree."""
    blob = getattr(host, "fdt", None)
    if not blob:
        raise HostError("the running kernel exposes no device tree (/sys/firmware/fdt is missing or empty), and an "
                        "arm64 kernel needs one to boot; run on a kernel with CONFIG_OF (every arm64 kernel has it) "
                        "as root (the file is root-only)")
    try:
        return _fdt.parse_fdt(blob)
    except ImageFormatError as err:
        raise HostError("the running kernel's device tree (/sys/firmware/fdt) cannot be read: %s; the recording is "
                        "damaged or this is not an arm64 host" % err)


def _chosen_range(tree, node, name):
    """(start, size) of a reg-style /chosen property in the root's cells, or None."""
    prop = node.prop(name)
    if prop is None:
        return None
    try:
        ranges = _fdt.decode_ranges(prop, *tree.root_cells())
    except ImageFormatError:
        return None
    return ranges[0] if ranges and ranges[0][1] else None


def _old_initrd(node):
    start, end = node.prop("linux,initrd-start"), node.prop("linux,initrd-end")
    if start is None or end is None:
        return None
    try:
        first, last = start.number(), end.number()
    except ImageFormatError:
        return None
    return (first, last - first) if last > first else None


def _drop_reservations(tree, stale):
    """Remove the memory reservations of ``stale`` ((start, size) pairs); a firmware may have
    rounded a size up to pages, so that size matches too (fdt_find_and_del_mem_rsv())."""
    gone = []
    for start, size in stale:
        for candidate in ((start, size), (start, align_up(size, _PAGE))):
            if candidate in tree.reservations:
                tree.reservations.remove(candidate)
                gone.append(candidate)
                break
    return gone


def next_tree(running, running_size, cmdline, initrd=None, kaslr_seed=None, rng_seed=None,
              elfcorehdr=None, usable_memory=None):
    """The next kernel's DeviceTree, made from ``running`` (a DeviceTree; it is edited in place and
    returned) whose blob was ``running_size`` bytes.

    ``cmdline`` is bytes (check_cmdline()); ``initrd`` and ``elfcorehdr`` are (address, size) or None; ``kaslr_seed`` an int or None;
    ``rng_seed`` bytes or None; ``usable_memory`` the capture kernel's [(address, size)], the
    main crash region first.  Returns (tree, removed): ``removed`` names what was dropped.
    """
    tree = running
    chosen = _fdt.chosen(tree)
    stale = [r for r in (_old_initrd(chosen),) + tuple(_chosen_range(tree, chosen, n) for n in _RANGE_PROPERTIES) if r]
    removed = _fdt.drop_chosen_properties(tree, STALE_CHOSEN)
    # The running tree's own reservation: its address is not visible from userspace, its size is.
    stale.extend((a, s) for a, s in list(tree.reservations) if s == running_size)
    removed.extend("reservation %#x+%#x" % r for r in _drop_reservations(tree, stale))

    # Raw bytes: the command line was checked (check_cmdline) and may be any UTF-8.
    chosen.set("bootargs", bytes(cmdline) + b"\0")
    if initrd is not None:
        _fdt.set_initrd(tree, initrd[0], initrd[0] + initrd[1])
        tree.reservations.append(tuple(initrd))
    if kaslr_seed is not None:
        _fdt.set_kaslr_seed(tree, kaslr_seed)
    if rng_seed:
        _fdt.set_rng_seed(tree, rng_seed)
    if elfcorehdr is not None:
        # No memory reservation for it: every kernel that reads linux,elfcorehdr reserves the
        # range itself (fdt_reserve_elfcorehdr()), and one already reserved makes 6.1 warn
        # "elfcorehdr is overlapped" (seen booting Debian's 6.1 from our plan).
        _fdt.set_elfcorehdr(tree, elfcorehdr[0], elfcorehdr[1])
    if usable_memory:
        _fdt.set_usable_memory_range(tree, list(usable_memory))
    # An empty flag the kernel's own loader sets (of_kexec_alloc_and_setup_fdt(), since 5.13).
    chosen.set("linux,booted-from-kexec", b"")
    return tree, removed


def check_cmdline(cmdline):
    """The command line's bytes; refused when the kernel would cut it (it copies at most
    COMMAND_LINE_SIZE - 1 bytes of bootargs, early_init_dt_scan_chosen())."""
    data = encode_cmdline(cmdline)
    if len(data) >= COMMAND_LINE_SIZE:
        raise ImageFormatError("the kernel command line is %d bytes, but arm64 kernels keep at most %d "
                               "(COMMAND_LINE_SIZE); shorten it" % (len(data), COMMAND_LINE_SIZE - 1))
    return data


def to_blob(tree):
    """The tree as a blob the arm64 boot protocol accepts (at most 2 MiB)."""
    blob = _fdt.build_fdt(tree)
    if len(blob) > MAX_FDT_SIZE:
        raise ImageFormatError("the next kernel's device tree is %d bytes, more than the 2 MiB the arm64 boot "
                               "protocol allows; the running tree is unusually large (shorten the command line?)"
                               % len(blob))
    return blob


def alignment(size):
    """The segment alignment that keeps a blob of ``size`` bytes inside one 2 MiB block (the
    kernel maps it with blocks of up to 2 MiB: it must not straddle two): the smallest power of
    two holding it, at least a page."""
    align = _PAGE
    while align < size:
        align <<= 1
    return align
