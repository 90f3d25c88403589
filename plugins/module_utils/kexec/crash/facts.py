# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the running kernel says about its own crash dump, read once for a crash load.

- the per-CPU crash notes (``/sys/devices/system/cpu/cpuN/crash_notes``: the panicking kernel
  saves each CPU's registers there, crash_save_cpu);
- the vmcoreinfo note (``/sys/kernel/vmcoreinfo``: symbol addresses and structure offsets dump
  tools need, crash_save_vmcoreinfo);
- the kernel text mapping and the direct map, from the ELF program headers at the start of
  ``/proc/kcore`` (each architecture knows where its kernel lives: ``Arch.kcore_layout``);
- the RAM to dump: the top-level System RAM ranges of ``/proc/iomem`` (or the memory map).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..core.memmap import RAM, Range
from ..errors import HostError
from ..host.sysroot import as_sysroot, parse_u64

#: More CPUs than any Linux build supports (NR_CPUS is at most 8192): a list naming more is corrupt.
MAX_CPUS = 1 << 16
#: Bytes of /proc/kcore read for its program headers.
KCORE_HEAD = 64 << 10
#: A crash note is an ELF note per CPU (a few hundred bytes); the kernel never publishes more.
MAX_NOTE_SIZE = 1 << 20


def parse_cpu_list(text, where="the CPU list"):
    """CPU numbers from a sysfs cpu list such as ``0-3,8``; [] for empty text.

    Bounded: a list naming more CPUs than Linux can have is refused, not expanded.
    """
    cpus = []
    for part in (text or "").strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise HostError("cannot parse %s %r; expected e.g. 0-3,8 (the file is corrupted)" % (where, text))
        if first < 0 or last < first or last >= MAX_CPUS or len(cpus) + last - first + 1 > MAX_CPUS:
            raise HostError("%s %r names more CPUs than Linux supports (at most %d); the file is corrupted"
                            % (where, text.strip()[:60], MAX_CPUS))
        cpus.extend(range(first, last + 1))
    return cpus


def read_crash_notes(sysroot):
    """[(cpu, address, size)] of every possible CPU whose crash note the kernel publishes.

    A possible CPU that is not present has no sysfs directory: it cannot be running when the
    kernel panics, so it has no registers to save and is skipped.
    """
    tree = as_sysroot(sysroot)
    rel = "sys/devices/system/cpu/possible"
    text = tree.read_text(rel)
    if text is None:
        raise HostError("cannot read %s: the per-CPU crash notes cannot be listed; is /sys mounted?"
                        % tree.path(rel))
    notes = []
    for cpu in parse_cpu_list(text, tree.path(rel)):
        base = "sys/devices/system/cpu/cpu%d" % cpu
        if not tree.isdir(base):
            continue
        addr = tree.read_text(base + "/crash_notes")
        size = tree.read_text(base + "/crash_notes_size")
        if addr is None:
            raise HostError("cannot read %s: the kernel lacks CONFIG_CRASH_DUMP, or this is not root "
                            "(the file is root-only); run as root on a kdump-capable kernel"
                            % tree.path(base + "/crash_notes"))
        address = parse_u64(addr.strip(), 16, tree.path(base + "/crash_notes"))
        # Kernels before crash_notes_size existed used one page-sized note per CPU at most.
        length = parse_u64(size.strip(), 10, tree.path(base + "/crash_notes_size")) if size is not None else 4096
        if address == 0 or length == 0 or length > MAX_NOTE_SIZE:
            raise HostError("CPU %d reports an unusable crash note (address %#x, size %d); the kernel's "
                            "crash notes are missing or the recording is corrupted" % (cpu, address, length))
        notes.append((cpu, address, length))
    if not notes:
        raise HostError("no CPU under %s publishes a crash note; the kernel lacks CONFIG_CRASH_DUMP"
                        % tree.path("sys/devices/system/cpu"))
    return notes


def read_vmcoreinfo(sysroot):
    """(physical address, size) of the vmcoreinfo note, or None when the kernel has none."""
    tree = as_sysroot(sysroot)
    rel = "sys/kernel/vmcoreinfo"
    text = tree.read_text(rel)
    if text is None:
        return None
    words = text.split()
    if len(words) < 2:
        raise HostError("cannot parse %s (%r); expected '<address> <size>' in hex (record the host tree again)"
                        % (tree.path(rel), text[:60]))
    # "%pa %x": both hexadecimal.
    addr = parse_u64(words[0], 16, tree.path(rel))
    size = parse_u64(words[1], 16, tree.path(rel))
    if size > MAX_NOTE_SIZE:
        raise HostError("%s says the vmcoreinfo note is %d bytes; the kernel's is a few KiB, the file is "
                        "corrupted" % (tree.path(rel), size))
    return (addr, size) if addr and size else None


class CrashFacts:
    """What the running kernel says about its own crash dump: notes, vmcoreinfo, the kernel
    text mapping, the direct map, and the RAM to dump (iomem's top-level System RAM)."""

    __slots__ = ("notes", "vmcoreinfo", "kernel_text", "page_offset", "ram", "warnings")

    def __init__(self, notes, vmcoreinfo=None, kernel_text=None, page_offset=None, ram=(), warnings=()):
        self.notes = [tuple(n) for n in notes]
        self.vmcoreinfo = tuple(vmcoreinfo) if vmcoreinfo else None
        self.kernel_text = dict(kernel_text) if kernel_text else None
        self.page_offset = page_offset
        self.ram = sorted(Range(r.start, r.end, RAM) for r in ram)
        self.warnings = list(warnings)

    @classmethod
    def read(cls, sysroot, iomem, memory_map, kcore_layout=None):
        """Read from ``sysroot``; ``iomem`` is Host.iomem (list of IomemNode), ``memory_map``
        Host.memory_map (used for the RAM only when iomem is unknown), ``kcore_layout`` the
        architecture's parser of /proc/kcore's headers (-> (kernel_text, page_offset))."""
        tree = as_sysroot(sysroot)
        warnings = []
        notes = read_crash_notes(tree)
        vmcoreinfo = read_vmcoreinfo(tree)
        if vmcoreinfo is None:
            warnings.append("the kernel publishes no vmcoreinfo: dump tools (makedumpfile, the kernel "
                            "log reader) will not find its symbols in the vmcore")
        text, page_offset = None, None
        if kcore_layout is not None:
            text, page_offset = kcore_layout(tree.read_head("proc/kcore", KCORE_HEAD))
        if text is None:
            warnings.append("/proc/kcore shows no kernel text mapping (lockdown, or not root): the dump "
                            "gets no PT_LOAD for the kernel's virtual addresses; tools use vmcoreinfo")
        if iomem:
            ram = [Range(n.start, n.end, RAM) for n in iomem if n.name == RAM]
        else:
            ram = memory_map.ram() if memory_map is not None else []
        if not ram:
            raise HostError("no System RAM to dump: /proc/iomem lists none under %s" % tree.root)
        return cls(notes, vmcoreinfo, text, page_offset, ram, warnings)

    @classmethod
    def of_host(cls, host, kcore_layout=None):
        """The facts a test set on ``host`` (Host.crash_facts), else read from its sysroot."""
        return getattr(host, "crash_facts", None) or cls.read(
            getattr(host, "sysroot", "/"), getattr(host, "iomem", None), getattr(host, "memory_map", None),
            kcore_layout=kcore_layout)

    def to_dict(self):
        return {"notes": [{"cpu": c, "addr": a, "size": s} for c, a, s in self.notes],
                "vmcoreinfo": None if self.vmcoreinfo is None else {"addr": self.vmcoreinfo[0], "size": self.vmcoreinfo[1]},
                "kernel_text": self.kernel_text, "page_offset": self.page_offset,
                "ram": [r.to_dict() for r in self.ram], "warnings": list(self.warnings)}
