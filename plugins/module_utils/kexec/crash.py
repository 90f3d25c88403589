"""What a crash (kdump) kernel needs besides its image, for kexec_load on x86_64.

kexec_file_load builds all of this inside the kernel; with kexec_load the loader provides it:

- the **ELF core header** (``elfcorehdr``): an ELF64 ET_CORE header whose program headers tell
  the capture kernel where the crashed kernel's memory and notes are.  One PT_NOTE per CPU
  (``/sys/devices/system/cpu/cpuN/crash_notes``: the kernel writes each CPU's registers there
  when it panics), one PT_NOTE for vmcoreinfo (``/sys/kernel/vmcoreinfo``: symbol addresses and
  structure offsets tools need to read the dump), one PT_LOAD for the kernel text mapping and
  one per range of System RAM outside the crash region.  For PT_LOAD and PT_NOTE alike
  ``p_offset`` is the *physical address* the capture kernel reads from (that is how
  /proc/vmcore finds the bytes), ``p_paddr`` the address the data had in the crashed kernel.
- the **backup region**: the capture kernel boots over the RAM below 640 KiB (real-mode
  trampoline, BIOS data), so the purgatory copies it at crash time into a segment inside the
  crash region, and the header's PT_LOAD for that range points at the copy.
- the **capture memory map** (e820): only the crash region and the low 640 KiB as RAM, the
  firmware's ACPI and reserved ranges as they were; the header and the backup copy are marked
  reserved so the capture kernel never allocates over them before it has read them.
- the command line: ``elfcorehdr=<address>`` plus the capture options (``irqpoll nr_cpus=1
  reset_devices`` by default: one CPU, devices reset, interrupts polled, because the crashed
  kernel left hardware in an unknown state).

Everything here is a plain value (``CrashFacts``, ``CrashSetup``) so plans print as JSON.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

from .errors import HostError, PlanError
from .memmap import PAGE_SIZE, RAM, Range, align_up, subtract

#: Default options for a capture kernel's command line (configurable everywhere).
DEFAULT_CAPTURE_OPTIONS = "irqpoll nr_cpus=1 reset_devices"
#: The capture kernel uses the RAM below this address; the purgatory backs it up first.
BACKUP_LIMIT = 0xA0000
#: The kernel text mapping on x86_64 (__START_KERNEL_map; KASLR moves the text within 1 GiB).
KERNEL_MAP_START = 0xFFFFFFFF80000000
KERNEL_MAP_END = 0xFFFFFFFFC0000000
#: Room the loader asks for in the crash region on top of kernel and initrd: boot_params,
#: purgatory, the ELF core header, the backup copy and the kernel's own control pages.
LOADER_OVERHEAD = 2 << 20

ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
ET_CORE = 4
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
PF_RWX = 7

_MIB = float(1 << 20)


def _mib(n):
    return "%.1f MiB" % (n / _MIB)


# --------------------------------------------------------------------------------------------
# facts from the running kernel


def _read(sysroot, rel):
    try:
        with open(os.path.join(sysroot, rel), "rb") as f:
            return f.read()
    except (IOError, OSError):
        return None


def parse_cpu_list(text):
    """CPU numbers from a sysfs cpu list such as ``0-3,8``; [] for empty text."""
    cpus = []
    for part in (text or "").strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise HostError("cannot parse the CPU list %r; expected e.g. 0-3,8" % text)
        cpus.extend(range(first, last + 1))
    return cpus


def read_crash_notes(sysroot):
    """[(cpu, address, size)] of every possible CPU whose crash note the kernel publishes.

    A possible CPU that is not present has no sysfs directory: it cannot be running when the
    kernel panics, so it has no registers to save and is skipped.
    """
    text = _read(sysroot, "sys/devices/system/cpu/possible")
    if text is None:
        raise HostError("cannot read %s: the per-CPU crash notes cannot be listed; is /sys mounted?"
                        % os.path.join(sysroot, "sys/devices/system/cpu/possible"))
    notes = []
    for cpu in parse_cpu_list(text.decode("ascii", "replace")):
        base = "sys/devices/system/cpu/cpu%d" % cpu
        if not os.path.isdir(os.path.join(sysroot, base)):
            continue
        addr = _read(sysroot, base + "/crash_notes")
        size = _read(sysroot, base + "/crash_notes_size")
        if addr is None:
            raise HostError("cannot read %s: the kernel lacks CONFIG_CRASH_DUMP, or this is not root "
                            "(the file is root-only); run as root on a kdump-capable kernel"
                            % os.path.join(sysroot, base, "crash_notes"))
        try:
            address = int(addr.strip(), 16)
            # Kernels before crash_notes_size existed used one page-sized note per CPU at most.
            length = int(size.strip(), 10) if size is not None else PAGE_SIZE
        except ValueError:
            raise HostError("cannot parse the crash note of CPU %d (%r, %r)" % (cpu, addr, size))
        if address == 0 or length <= 0:
            raise HostError("CPU %d reports no crash note (address %#x, size %d)" % (cpu, address, length))
        notes.append((cpu, address, length))
    if not notes:
        raise HostError("no CPU under %s publishes a crash note; the kernel lacks CONFIG_CRASH_DUMP"
                        % os.path.join(sysroot, "sys/devices/system/cpu"))
    return notes


def read_vmcoreinfo(sysroot):
    """(physical address, size) of the vmcoreinfo note, or None when the kernel has none."""
    text = _read(sysroot, "sys/kernel/vmcoreinfo")
    if text is None:
        return None
    words = text.split()
    try:
        # "%pa %x": both hexadecimal.
        addr, size = int(words[0], 16), int(words[1], 16)
    except (IndexError, ValueError):
        raise HostError("cannot parse %s (%r); expected '<address> <size>' in hex"
                        % (os.path.join(sysroot, "sys/kernel/vmcoreinfo"), text[:60]))
    return (addr, size) if addr and size else None


def parse_kcore_layout(data):
    """(kernel_text, page_offset) from the start of /proc/kcore (its ELF program headers).

    kernel_text is {"vaddr", "paddr", "size"} of the PT_LOAD inside the kernel text mapping (its
    virtual address moves with KASLR); page_offset is where the direct map starts (a PT_LOAD of
    RAM: vaddr - paddr).  Either is None when the headers do not show it.
    """
    if not data or len(data) < ELF_HEADER.size or data[:4] != b"\x7fELF" or data[4] != 2:
        return None, None
    fields = ELF_HEADER.unpack_from(data, 0)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    text, page_offset = None, None
    for i in range(phnum):
        off = phoff + i * phentsize
        if phentsize < PROGRAM_HEADER.size or off + PROGRAM_HEADER.size > len(data):
            break
        p_type, dummy_flags, dummy_offset, vaddr, paddr, dummy_filesz, memsz, dummy_align = \
            PROGRAM_HEADER.unpack_from(data, off)
        if p_type != PT_LOAD or paddr in (0xFFFFFFFFFFFFFFFF,):
            continue
        if KERNEL_MAP_START <= vaddr < KERNEL_MAP_END and text is None:
            text = {"vaddr": vaddr, "paddr": paddr, "size": memsz}
        elif vaddr >= 0xFFFF800000000000 and vaddr < KERNEL_MAP_START and page_offset is None and paddr < vaddr:
            page_offset = vaddr - paddr
    return text, page_offset


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
    def read(cls, sysroot, iomem, memory_map):
        """Read from ``sysroot``; ``iomem`` is Host.iomem (list of IomemNode), ``memory_map``
        Host.memory_map (used for the RAM only when iomem is unknown)."""
        warnings = []
        notes = read_crash_notes(sysroot)
        vmcoreinfo = read_vmcoreinfo(sysroot)
        if vmcoreinfo is None:
            warnings.append("the kernel publishes no vmcoreinfo: dump tools (makedumpfile, the kernel "
                            "log reader) will not find its symbols in the vmcore")
        kcore = None
        try:
            with open(os.path.join(sysroot, "proc/kcore"), "rb") as f:
                kcore = f.read(64 << 10)
        except (IOError, OSError):
            pass
        text, page_offset = parse_kcore_layout(kcore)
        if text is None:
            warnings.append("/proc/kcore shows no kernel text mapping (lockdown, or not root): the dump "
                            "gets no PT_LOAD for the kernel's virtual addresses; tools use vmcoreinfo")
        if iomem:
            ram = [Range(n.start, n.end, RAM) for n in iomem if n.name == RAM]
        else:
            ram = memory_map.ram() if memory_map is not None else []
        if not ram:
            raise HostError("no System RAM to dump: /proc/iomem lists none under %s" % sysroot)
        return cls(notes, vmcoreinfo, text, page_offset, ram, warnings)

    def to_dict(self):
        return {"notes": [{"cpu": c, "addr": a, "size": s} for c, a, s in self.notes],
                "vmcoreinfo": None if self.vmcoreinfo is None else {"addr": self.vmcoreinfo[0], "size": self.vmcoreinfo[1]},
                "kernel_text": self.kernel_text, "page_offset": self.page_offset,
                "ram": [r.to_dict() for r in self.ram], "warnings": list(self.warnings)}


# --------------------------------------------------------------------------------------------
# the pieces, as pure functions


def backup_span(ram):
    """(start, end) of the RAM below 640 KiB the capture kernel will reuse, or None."""
    low = [r for r in ram if r.start < BACKUP_LIMIT]
    if not low:
        return None
    return min(r.start for r in low), min(max(r.end for r in low), BACKUP_LIMIT)


def dump_loads(facts, crash_regions, backup=None):
    """The PT_LOADs: [{"paddr", "offset", "size", "vaddr"}] in address order.

    System RAM minus every crash region (the capture kernel's own memory is not evidence);
    ranges inside the backup span read from the copy at ``backup[1]`` (``backup`` is
    (src, dst, len)).  The kernel text mapping comes first, as dump tools expect.
    """
    loads = []
    if facts.kernel_text:
        t = facts.kernel_text
        loads.append({"paddr": t["paddr"], "offset": t["paddr"], "size": t["size"], "vaddr": t["vaddr"]})
    holes = [(r.start, r.end) for r in crash_regions]
    for r in subtract(facts.ram, holes):
        pieces = [(r.start, r.end)]
        if backup and backup[2]:
            src, dst, length = backup
            lo, hi = max(r.start, src), min(r.end, src + length)
            if lo < hi:
                pieces = [p for p in ((r.start, lo), (hi, r.end)) if p[1] > p[0]]
                vaddr = facts.page_offset + lo if facts.page_offset is not None else 0
                loads.append({"paddr": lo, "offset": dst + (lo - src), "size": hi - lo, "vaddr": vaddr})
        for start, end in pieces:
            vaddr = facts.page_offset + start if facts.page_offset is not None else 0
            loads.append({"paddr": start, "offset": start, "size": end - start, "vaddr": vaddr})
    head, rest = loads[:1 if facts.kernel_text else 0], loads[1 if facts.kernel_text else 0:]
    return head + sorted(rest, key=lambda d: d["paddr"])


def elfcorehdr_size(facts):
    """Bytes of the ELF core header for ``facts`` (the backup split adds at most one PT_LOAD)."""
    count = len(facts.notes) + (1 if facts.vmcoreinfo else 0) + (1 if facts.kernel_text else 0)
    count += len(facts.ram) * 2 + 2  # a crash region or the backup span can split a range in two
    return ELF_HEADER.size + count * PROGRAM_HEADER.size


def build_elfcorehdr(notes, loads, machine=EM_X86_64):
    """An ELF64 little-endian ET_CORE header: PT_NOTEs first (``notes``: [(address, size)]),
    then the PT_LOADs (``loads`` as from dump_loads)."""
    phdrs = []
    for addr, size in notes:
        phdrs.append(PROGRAM_HEADER.pack(PT_NOTE, 0, addr, 0, addr, size, size, 0))
    for ld in loads:
        phdrs.append(PROGRAM_HEADER.pack(PT_LOAD, PF_RWX, ld["offset"], ld["vaddr"], ld["paddr"],
                                         ld["size"], ld["size"], 0))
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1, SysV
    header = ELF_HEADER.pack(ident, ET_CORE, machine, 1, 0, ELF_HEADER.size, 0, 0, ELF_HEADER.size,
                             PROGRAM_HEADER.size, len(phdrs), 0, 0, 0)
    return header + b"".join(phdrs)


def capture_memory_map(memory_map, crash_regions, backup_src=None, reserved=()):
    """The capture kernel's memory map: [Range] sorted.

    Every non-RAM range of the firmware map as it was (ACPI tables, NVS, reserved: the capture
    kernel needs them), the low RAM of ``backup_src`` ((start, end): the purgatory saved it, so
    it may be reused), each crash region as RAM, minus ``reserved`` ([(start, end)]: the core
    header and the backup copy), which are listed as reserved instead.
    """
    out = [Range(r.start, r.end, r.type) for r in memory_map.ranges if r.type != RAM]
    ram = []
    if backup_src:
        ram.extend(Range(r.start, min(r.end, backup_src[1]), RAM) for r in memory_map.ram()
                   if r.start < backup_src[1])
    ram.extend(Range(r.start, r.end, RAM) for r in crash_regions)
    holes = list(reserved)
    out.extend(subtract(ram, holes))
    out.extend(Range(s, e, "Reserved") for s, e in holes)
    return sorted(out)


def add_capture_options(cmdline, options):
    """``cmdline`` with each word of ``options`` appended unless the same option (by name, or
    the word itself for flags) is already there: the user's own ``nr_cpus=2`` wins."""
    from .loader import split_cmdline  # loader imports this module lazily too
    words = split_cmdline(cmdline)
    names = set(w.split("=", 1)[0] for w in words)
    for word in split_cmdline(options):
        if word.split("=", 1)[0] not in names:
            words.append(word)
            names.add(word.split("=", 1)[0])
    return " ".join(words)


def check_fits(region, kernel_bytes, initrd_bytes, overhead=LOADER_OVERHEAD):
    """Refuse, naming both sizes, a crash image the crash region cannot hold."""
    need = align_up(kernel_bytes, PAGE_SIZE) + align_up(initrd_bytes, PAGE_SIZE) + overhead
    if need > region.size:
        raise PlanError(
            "the crash kernel does not fit the crash region: it needs %s (kernel %s with its "
            "decompression space, initrd %s, %s for boot data, purgatory, core header and backup) "
            "but the crash region %#x-%#x holds %s; reserve more with crashkernel= on the kernel "
            "command line (e.g. crashkernel=%dM) or use a smaller initrd"
            % (_mib(need), _mib(kernel_bytes), _mib(initrd_bytes), _mib(overhead), region.start,
               region.end - 1, _mib(region.size), _suggest_mib(need)))
    return need


def _suggest_mib(need):
    """A crashkernel= size covering ``need`` and room for the capture kernel to run."""
    mib = int(need / _MIB) + 1
    return max(256, (mib * 2 + 63) // 64 * 64)


# --------------------------------------------------------------------------------------------
# putting it into a plan


class CrashSetup:
    """What prepare() added to a crash plan: plain values for the plan report."""

    def __init__(self, cmdline, memory_map, backup, elfcorehdr_addr, elfcorehdr_size, loads, notes, warnings):
        self.cmdline = cmdline
        self.memory_map = memory_map
        self.backup = backup
        self.elfcorehdr_addr = elfcorehdr_addr
        self.elfcorehdr_size = elfcorehdr_size
        self.loads = loads
        self.notes = notes
        self.warnings = warnings

    def to_dict(self):
        return {"elfcorehdr": {"addr": self.elfcorehdr_addr, "size": self.elfcorehdr_size},
                "backup": None if not self.backup else {"src": self.backup[0], "dst": self.backup[1], "len": self.backup[2]},
                "pt_load": [dict(d) for d in self.loads], "pt_note": [{"addr": a, "size": s} for a, s in self.notes],
                "memory_map": [r.to_dict() for r in self.memory_map]}


def prepare(plan, host, cmdline, facts=None):
    """Reserve the backup copy and the core header in ``plan`` (a crash Plan), fill the header,
    and return the CrashSetup: the command line with ``elfcorehdr=`` and the capture memory map
    the image's boot_params must carry.  ``facts`` defaults to CrashFacts.read() of the host."""
    if facts is None:
        facts = getattr(host, "crash_facts", None) or CrashFacts.read(
            getattr(host, "sysroot", "/"), getattr(host, "iomem", None), getattr(host, "memory_map", None))
    crash_regions = list(getattr(host, "crash_regions", None) or [plan.crash_region])
    if plan.crash_region not in crash_regions:
        crash_regions.append(plan.crash_region)
    span = backup_span(facts.ram)
    backup = None
    if span:
        # Bottom-up keeps the small pieces together at the region's start, the kernel and
        # initrd (placed top-down) above them.
        seg = plan.reserve("backup", span[1] - span[0], top_down=False)
        seg.set_buffer(b"")  # zero-filled by the kernel; the purgatory copies at crash time
        backup = (span[0], seg.mem, span[1] - span[0])
    size = elfcorehdr_size(facts)
    hdr = plan.reserve("elfcorehdr", size, top_down=False)
    loads = dump_loads(facts, crash_regions, backup)
    notes = [(a, s) for dummy_cpu, a, s in facts.notes]
    if facts.vmcoreinfo:
        notes.append(facts.vmcoreinfo)
    data = build_elfcorehdr(notes, loads)
    if len(data) > hdr.memsz:  # elfcorehdr_size() over-counts; this is a loader bug
        raise PlanError("the ELF core header grew to %d bytes, more than the %d reserved" % (len(data), hdr.memsz))
    hdr.set_buffer(data)
    reserved = [(hdr.mem, hdr.mem + hdr.memsz)]
    if backup:
        reserved.append((backup[1], backup[1] + align_up(backup[2], PAGE_SIZE)))
    memory_map = capture_memory_map(host.memory_map, crash_regions, span, reserved)
    from .loader import split_cmdline
    full = " ".join(w for w in split_cmdline(cmdline) if not w.startswith("elfcorehdr="))
    full = (full + " elfcorehdr=%#x" % hdr.mem).strip()
    return CrashSetup(full, memory_map, backup, hdr.mem, len(data), loads, notes, list(facts.warnings))
