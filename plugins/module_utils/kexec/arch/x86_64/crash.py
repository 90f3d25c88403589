# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an x86_64 crash (kdump) kernel needs besides its image, for kexec_load.

kexec_file_load builds all of this inside the kernel; with kexec_load the loader provides it:

- the **ELF core header** (crash/elfcore.py), with the kernel text mapping at its KASLR address;
- the **backup region**: the capture kernel boots over the RAM below 640 KiB (real-mode
  trampoline, BIOS data), so the purgatory copies it at crash time into a segment inside the
  crash region, and the header's PT_LOAD for that range points at the copy;
- the **capture memory map** (e820): only the crash region and the low 640 KiB as RAM, the
  firmware's ACPI and reserved ranges as they were; the header and the backup copy are marked
  reserved so the capture kernel never allocates over them before it has read them;
- the command line: ``elfcorehdr=<address>`` plus the capture options (``irqpoll nr_cpus=1
  reset_devices`` by default: one CPU, devices reset, interrupts polled, because the crashed
  kernel left hardware in an unknown state).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...cmdline import split_cmdline
from ...core.elf import EM_X86_64
from ...core.memmap import RAM, Range, align_up, subtract
from ...crash import CrashSetup
from ...crash.elfcore import ELF_HEADER, PROGRAM_HEADER, PT_LOAD, dump_loads, elfcorehdr_size, fill_elfcorehdr
from ...crash.facts import CrashFacts

#: Default options for a capture kernel's command line (configurable everywhere).
DEFAULT_CAPTURE_OPTIONS = "irqpoll nr_cpus=1 reset_devices"
#: The capture kernel uses the RAM below this address; the purgatory backs it up first.
BACKUP_LIMIT = 0xA0000
#: The kernel text mapping on x86_64 (__START_KERNEL_map; KASLR moves the text within 1 GiB).
KERNEL_MAP_START = 0xFFFFFFFF80000000
KERNEL_MAP_END = 0xFFFFFFFFC0000000


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


def backup_span(ram):
    """(start, end) of the RAM below 640 KiB the capture kernel will reuse, or None."""
    low = [r for r in ram if r.start < BACKUP_LIMIT]
    if not low:
        return None
    return min(r.start for r in low), min(max(r.end for r in low), BACKUP_LIMIT)


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


def prepare(plan, host, cmdline, facts=None):
    """Reserve the backup copy and the core header in ``plan`` (a crash Plan), fill the header,
    and return the CrashSetup: the command line with ``elfcorehdr=`` and the capture memory map
    the image's boot_params must carry.  ``facts`` defaults to CrashFacts.read() of the host."""
    if facts is None:
        facts = CrashFacts.of_host(host, kcore_layout=parse_kcore_layout)
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
    notes = fill_elfcorehdr(hdr, facts, loads, EM_X86_64)
    reserved = [(hdr.mem, hdr.mem + hdr.memsz)]
    if backup:
        reserved.append((backup[1], backup[1] + align_up(backup[2], plan.page_size)))
    memory_map = capture_memory_map(host.memory_map, crash_regions, span, reserved)
    full = " ".join(w for w in split_cmdline(cmdline) if not w.startswith("elfcorehdr="))
    full = (full + " elfcorehdr=%#x" % hdr.mem).strip()
    return CrashSetup(full, memory_map, backup, hdr.mem, hdr.bufsz, loads, notes, list(facts.warnings))
