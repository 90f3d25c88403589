# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The flattened device tree a ppc64 kernel boots from after kexec.

A ppc64 kernel entered with r5 = 0 skips prom_init and reads everything from the tree in r3,
so the tree must describe the machine as the running kernel sees it *now* (CPUs and memory
added since boot, the PCI DMA windows it set up, the RTAS it instantiated): that is the live
``/proc/device-tree``, flattened again (the running kernel's own kexec_file loader starts from
the same data, and so does kexec-tools' fs2dt).  Then:

- ``/chosen`` loses what belonged to the running boot only: its command line and initrd, the
  crash region and kernel end it exported for loaders (``linux,crashkernel-*``,
  ``linux,kernel-end``, ``linux,htab-*``; the next kernel would read the first as its own
  reservation), a ``mem=`` limit (``linux,memory-limit``, which the next kernel would otherwise
  obey whatever its command line), any stale crash properties; every node loses the
  ``linux,pci-domain`` the running kernel numbered it with; the ``name`` properties the kernel
  derived from node names are left out, as in the tree it booted from;
- ``/chosen`` gets ``bootargs``, ``linux,initrd-start``/``-end`` and a fresh ``rng-seed``, which
  early_init_dt_scan_chosen() credits to the RNG (Book3S ppc64 has no KASLR, so no ``kaslr-seed``);
- a capture kernel gets ``linux,usable-memory`` on each memory node and
  ``linux,drconf-usable-memory`` on dynamic-reconfiguration memory (early_init_dt_scan_memory()
  and early_init_drmem_lmb() then add only those ranges) and ``linux,elfcorehdr``;
- the memory reservation block lists what the next kernel must not allocate: RTAS, OPAL, TCE
  tables, the TPM log, the initrd, the tree itself and, for a capture kernel, the crashed
  kernel's memory below the crash region, the backup copy and the core header.

``boot_cpuid_phys`` is written by purgatory at jump time: only then is it known which CPU enters.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...core import fdt as _fdt
from ...core.fdt_fs import read_fs
from ...errors import HostError, ImageFormatError
from .platform import DEVICE_TREE

#: /chosen properties the running boot owns (or that the loader sets afresh).
RUNNING_BOOT_ONLY = ("bootargs", "linux,initrd-start", "linux,initrd-end", "linux,crashkernel-base",
                     "linux,crashkernel-size", "linux,kernel-end", "linux,htab-base", "linux,htab-size",
                     "linux,memory-limit", "rng-seed", "kaslr-seed", "linux,elfcorehdr",
                     "linux,usable-memory-range")
#: Properties no node keeps: the running kernel's PCI domain numbers, a capture kernel's limits.
EVERY_NODE = ("linux,pci-domain", "linux,usable-memory", "linux,drconf-usable-memory")
#: Bytes of fresh randomness for /chosen/rng-seed (what the kernel's own kexec_file loader gives).
RNG_SEED_BYTES = 64
DRCONF_NODE = "ibm,dynamic-reconfiguration-memory"
# ibm,dynamic-memory(-v2) flags (arch/powerpc/include/asm/drmem.h)
DRCONF_MEM_ASSIGNED = 0x8
DRCONF_MEM_RESERVED = 0x80


def read_live_tree(sysroot):
    """The running kernel's device tree from ``<sysroot>/proc/device-tree``, without the
    ``name`` properties it derived."""
    return read_fs(sysroot.path(DEVICE_TREE), keep_name_properties=False)


def _memory_nodes(tree):
    return [n for n in tree.root.children if n.basename == "memory" and n.prop("reg") is not None]


def first_cpu(tree):
    """The physical number of the first CPU thread the tree lists (the header's boot CPU until
    purgatory writes the real one)."""
    cpus = tree.node("/cpus")
    for node in cpus.children if cpus is not None else ():
        servers = node.prop("ibm,ppc-interrupt-server#s")
        if servers is not None and servers.value:
            return servers.cells()[0]
        if node.prop("reg") is not None and len(node.prop("reg").value) == 4:
            return node.prop("reg").u32()
    return 0


def clean(tree):
    """Drop what belongs to the running boot (RUNNING_BOOT_ONLY, EVERY_NODE)."""
    _fdt.drop_chosen_properties(tree, RUNNING_BOOT_ONLY)
    for _path, node in tree.walk():
        for name in EVERY_NODE:
            node.remove(name)


def _usable_pairs(start, end, usable):
    return [(max(start, s), min(end, e) - max(start, s)) for s, e in usable if s < end and start < e]


def set_usable_memory(tree, usable):
    """``linux,usable-memory`` on every memory node and ``linux,drconf-usable-memory`` on the
    dynamic-reconfiguration memory: the parts of each that lie in ``usable`` ([(start, end)]).
    A memory node with none gets (0, 0), which the kernel skips (add_usable_mem_property())."""
    acells, scells = tree.root_cells()
    usable = sorted(usable)
    for node in _memory_nodes(tree):
        pairs = []
        for base, size in node.reg(acells, scells):
            pairs.extend(_usable_pairs(base, base + (size or 0), usable))
        node.set("linux,usable-memory", _fdt.encode_ranges("linux,usable-memory", pairs or [(0, 0)], acells, scells))
    drconf = tree.root.child(DRCONF_NODE)
    if drconf is None:
        return
    lmb_size = drconf.prop("ibm,lmb-size")
    if lmb_size is None:
        raise HostError("/%s has no ibm,lmb-size; the device tree is not what pseries firmware gives" % DRCONF_NODE)
    size = lmb_size.number()
    out = bytearray()
    for base, flags in lmbs(drconf, acells):
        # A counter, then that many (base, size) pairs, for each LMB the capture kernel's
        # early_init_drmem_lmb() reads them for: it skips reserved and unassigned LMBs *before*
        # reading, so they get no entry (kexec-tools and kdump_setup_usable_lmb() write one for
        # every LMB, which misaligns the list when such an LMB precedes an assigned one).
        if flags & DRCONF_MEM_RESERVED or not flags & DRCONF_MEM_ASSIGNED:
            continue
        pairs = _usable_pairs(base, base + size, usable)
        out += len(pairs).to_bytes(4 * scells, "big")
        out += _fdt.encode_ranges("linux,drconf-usable-memory", pairs, acells, scells)
    drconf.set("linux,drconf-usable-memory", bytes(out))


def lmbs(drconf, acells):
    """[(base, flags)] of every LMB ibm,dynamic-memory-v2 (or v1) lists, in order."""
    v2 = drconf.prop("ibm,dynamic-memory-v2")
    lmb_size = drconf.prop("ibm,lmb-size").number()
    if v2 is not None:
        return _lmbs_v2(v2.value, acells, lmb_size)
    v1 = drconf.prop("ibm,dynamic-memory")
    if v1 is None:
        return []
    return _lmbs_v1(v1.value, acells)


def _count(data, entry, what):
    if len(data) < 4:
        raise ImageFormatError("%s is %d bytes, too short for its entry count" % (what, len(data)))
    count = struct.unpack_from(">I", data, 0)[0]
    if len(data) < 4 + count * entry:
        raise ImageFormatError("%s says %d entries of %d bytes but holds %d bytes" % (what, count, entry, len(data)))
    return count


def _lmbs_v1(data, acells):
    # {base (root address cells), drc index, reserved, associativity index, flags} per LMB
    entry = 4 * acells + 16
    out = []
    for i in range(_count(data, entry, "ibm,dynamic-memory")):
        at = 4 + i * entry
        base = int.from_bytes(data[at:at + 4 * acells], "big")
        flags = struct.unpack_from(">I", data, at + 4 * acells + 12)[0]
        out.append((base, flags))
    return out


def _lmbs_v2(data, acells, lmb_size):
    # {number of LMBs, first base (root address cells), first drc index, associativity index, flags}
    entry = 4 * acells + 16
    out = []
    for i in range(_count(data, entry, "ibm,dynamic-memory-v2")):
        at = 4 + i * entry
        seq = struct.unpack_from(">I", data, at)[0]
        base = int.from_bytes(data[at + 4:at + 4 + 4 * acells], "big")
        flags = struct.unpack_from(">I", data, at + 4 * acells + 12)[0]
        if len(out) + seq > 1 << 24:
            raise ImageFormatError("ibm,dynamic-memory-v2 lists more than 16M LMBs; it is corrupted")
        out.extend((base + j * lmb_size, flags) for j in range(seq))
    return out


def assigned_drconf_memory(tree):
    """[(start, end)] of the dynamic-reconfiguration LMBs assigned to this partition."""
    drconf = tree.root.child(DRCONF_NODE)
    if drconf is None or drconf.prop("ibm,lmb-size") is None:
        return []
    size = drconf.prop("ibm,lmb-size").number()
    return [(base, base + size) for base, flags in lmbs(drconf, tree.root_cells()[0])
            if flags & DRCONF_MEM_ASSIGNED and not flags & DRCONF_MEM_RESERVED]


def prepare(tree, cmdline, initrd=None, rng_seed=None, usable=None, elfcorehdr=None):
    """Edit ``tree`` (the live tree, read for this load) for the next kernel: ``initrd`` is
    (start, end) or None, ``usable`` the capture kernel's memory [(start, end)] or None,
    ``elfcorehdr`` its (address, size) or None."""
    clean(tree)
    _fdt.set_bootargs(tree, cmdline or "")
    if initrd is not None:
        _fdt.set_initrd(tree, initrd[0], initrd[1])
    _fdt.set_rng_seed(tree, rng_seed)
    if usable is not None:
        set_usable_memory(tree, usable)
    if elfcorehdr is not None:
        _fdt.set_elfcorehdr(tree, elfcorehdr[0], elfcorehdr[1])
    tree.boot_cpuid_phys = first_cpu(tree)
    return tree


def flatten(tree, reservations):
    """The blob, with ``reservations`` [(address, size)] as its memory reservation block."""
    tree.reservations = [(a, s) for a, s in reservations if s]
    return _fdt.build_fdt(tree)
