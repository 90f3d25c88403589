# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a ppc64 host's live device tree says about its memory, read property by property.

The whole ``/proc/device-tree`` is large (hundreds of nodes on a real LPAR) and only the device
tree for the next kernel needs all of it (devicetree.py); planning needs a dozen properties:

- ``/chosen/linux,kernel-end``: where the running kernel ends.  machine_kexec_prepare() refuses
  (ETXTBSY) any segment below it, because the segments are copied while that kernel still runs;
- the first memory node: the RMA, the memory real mode can reach in a hash-MMU LPAR, where
  purgatory runs and where kexec-tools and the kernel's own loader (ppc64_rma_size) keep every
  segment;
- the memory firmware and the running kernel keep for themselves and the next kernel must find
  intact: RTAS (``/rtas/linux,rtas-base`` + ``rtas-size``), OPAL, TCE tables (``linux,tce-base``
  on non-LPAR PCI nodes, which machine_kexec_prepare() also refuses to overwrite), the hash page
  table of a non-LPAR kernel, the TPM event log, and the root's ``reserved-ranges``;
- the console: the virtual terminal ``/chosen/stdout-path`` names, for purgatory's messages.

Property values are big-endian; each is checked for the length the kernel writes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...core.memmap import MemoryMap, Range
from ...errors import HostError
from ...host.sysroot import as_sysroot

DEVICE_TREE = "proc/device-tree"
#: Names of the memory the next kernel must find intact (and our segments must avoid).
RUNNING_KERNEL = "running kernel"
ABOVE_RMA = "above the RMA"


def _u(data, where, sizes=(4, 8)):
    if data is None:
        return None
    if len(data) not in sizes:
        raise HostError("%s is %d bytes, not a %s-byte number; the device tree is not what Linux exports"
                        % (where, len(data), " or ".join(str(s) for s in sizes)))
    return int.from_bytes(data, "big")


class LiveTree:
    """Typed reads of single properties under ``<sysroot>/proc/device-tree``."""

    def __init__(self, sysroot):
        self.tree = as_sysroot(sysroot)
        if not self.tree.isdir(DEVICE_TREE):
            raise HostError("%s has no device tree (%s): the ppc64 loader builds the next kernel's device tree "
                            "from it; is /proc mounted (or was the host recorded with its device tree)?"
                            % (self.tree.root, self.tree.path(DEVICE_TREE)))

    def path(self, rel=""):
        return self.tree.path(DEVICE_TREE + "/" + rel if rel else DEVICE_TREE)

    def prop(self, rel, limit=1 << 20):
        return self.tree.read_bytes(DEVICE_TREE + "/" + rel, limit=limit)

    def number(self, rel, sizes=(4, 8)):
        return _u(self.prop(rel), self.path(rel), sizes)

    def nodes(self, rel=""):
        """Names of the child nodes of ``rel`` (directories), sorted."""
        names = self.tree.listdir(DEVICE_TREE + ("/" + rel if rel else "")) or []
        return [n for n in names if self.tree.isdir(DEVICE_TREE + "/" + (rel + "/" if rel else "") + n)]

    def cells(self, rel=""):
        """(#address-cells, #size-cells) a node gives its children (the kernel's defaults 1/1)."""
        prefix = rel + "/" if rel else ""
        return (self.number(prefix + "#address-cells", (4,)) or 1, self.number(prefix + "#size-cells", (4,)) or 1)


def _pairs(data, address_cells, size_cells, where):
    step = 4 * (address_cells + size_cells)
    if not data or step == 0 or len(data) % step:
        raise HostError("%s is %d bytes, not a list of (%d + %d)-cell address/size pairs; the device tree is "
                        "not what Linux exports" % (where, len(data or b""), address_cells, size_cells))
    out = []
    for at in range(0, len(data), step):
        mid = at + 4 * address_cells
        out.append((int.from_bytes(data[at:mid], "big"), int.from_bytes(data[mid:at + step], "big")))
    return out


class PlatformFacts:
    """The memory facts above as plain values (addresses half-open, sizes in bytes).

    ``kernel_end``: the running kernel's end (linux,kernel-end); ``rma_top``: end of the first
    memory node; ``memory``: the memory nodes' ranges; ``keep``: [Range] the next kernel must
    find intact, each named; ``vterm``: unit address of the hvterm1 console or None.
    """

    def __init__(self, kernel_end, rma_top, memory, keep, vterm=None):
        self.kernel_end = kernel_end
        self.rma_top = rma_top
        self.memory = sorted(memory)
        self.keep = sorted(keep)
        self.vterm = vterm

    @classmethod
    def read(cls, sysroot):
        live = LiveTree(sysroot)
        kernel_end = live.number("chosen/linux,kernel-end", (8,))
        if kernel_end is None:
            raise HostError("%s is missing: the running kernel exports its end there (kexec_setup) and kexec_load "
                            "refuses segments below it; is this a ppc64 kernel with CONFIG_KEXEC?"
                            % live.path("chosen/linux,kernel-end"))
        memory = _memory_nodes(live)
        if not memory:
            raise HostError("the device tree at %s has no memory node with a reg property; it is not a ppc64 "
                            "Linux device tree" % live.path())
        first = min(memory)
        return cls(kernel_end, first[1], memory, _kept(live), _vterm(live))

    def placeable(self, memory_map):
        """``memory_map`` with everything a segment must not take marked as taken: the running
        kernel below kernel_end, the memory in ``keep``, all RAM above the RMA."""
        taken = [Range(0, self.kernel_end, RUNNING_KERNEL)] + list(self.keep)
        top = max([r.end for r in memory_map.ranges] + [self.rma_top])
        if top > self.rma_top:
            taken.append(Range(self.rma_top, top, ABOVE_RMA))
        return MemoryMap(list(memory_map.ranges) + taken)

    def to_dict(self):
        return {"kernel_end": self.kernel_end, "rma_top": self.rma_top,
                "memory": [list(m) for m in self.memory], "keep": [r.to_dict() for r in self.keep],
                "vterm": self.vterm}


def _memory_nodes(live):
    """(start, end) of every range in the reg of the root's memory nodes."""
    cells = live.cells()
    out = []
    for name in live.nodes():
        if name != "memory" and not name.startswith("memory@"):
            continue
        data = live.prop(name + "/reg")
        if data is None:
            continue
        for base, size in _pairs(data, cells[0], cells[1], live.path(name + "/reg")):
            if size:
                out.append((base, base + size))
    return out


def _named(base, size, name):
    if base is None or not size:
        return []
    return [Range(base, base + size, name)]


def _kept(live):
    """Every range the next kernel must find intact (kexec-tools' exclude ranges, the kernel's
    get_exclude_memory_ranges() and get_reserved_memory_ranges())."""
    keep = []
    keep += _named(live.number("rtas/linux,rtas-base", (4, 8)), live.number("rtas/rtas-size", (4, 8)), "RTAS")
    keep += _named(live.number("ibm,opal/opal-base-address", (8,)), live.number("ibm,opal/opal-runtime-size", (8,)),
                   "OPAL")
    keep += _named(live.number("chosen/linux,htab-base", (8,)), live.number("chosen/linux,htab-size", (8,)),
                   "hash page table")
    for name in live.nodes():
        if name.startswith("pci@"):
            keep += _named(live.number(name + "/linux,tce-base", (8,)), live.number(name + "/linux,tce-size", (4, 8)),
                           "TCE table")
        elif name.startswith("ibm,vtpm") or name.startswith("vdevice"):
            for node in ([name] if name.startswith("ibm,vtpm") else
                         [name + "/" + n for n in live.nodes(name) if n.startswith("vtpm")]):
                keep += _named(live.number(node + "/linux,sml-base", (8,)), live.number(node + "/linux,sml-size", (4, 8)),
                               "TPM event log")
    ranges = live.prop("reserved-ranges")
    if ranges:
        # Firmware reservations on OPAL systems: (u64 address, u64 size) pairs whatever the cells.
        for base, size in _pairs(ranges, 2, 2, live.path("reserved-ranges")):
            keep += _named(base, size, "firmware reserved")
    return keep


def _vterm(live):
    """The unit address of the hvterm1 virtual terminal /chosen/stdout-path names, or None
    (hvterm-protocol terminals need framing purgatory does not speak; OPAL consoles are no vterm)."""
    raw = live.prop("chosen/stdout-path") or live.prop("chosen/linux,stdout-path")
    if not raw:
        return None
    path = raw.split(b"\0", 1)[0].split(b":", 1)[0].decode("latin-1").strip("/")
    if not path or ".." in path.split("/"):
        return None
    compatible = live.prop(path + "/compatible") or b""
    if b"hvterm1" not in compatible.split(b"\0"):
        return None
    return live.number(path + "/reg", (4,))
