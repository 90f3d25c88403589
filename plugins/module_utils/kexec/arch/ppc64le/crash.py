# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a ppc64 capture kernel needs besides its image, for kexec_load (what the kernel's
load_crashdump_segments_ppc64() and setup_new_fdt_ppc64() build for kexec_file_load):

- the **backup region**: a relocatable capture kernel told to run where it was loaded still
  copies its interrupt vectors to address 0 (__after_prom_start), over the crashed kernel's
  first pages; purgatory copies the first 64 KiB (BACKUP_SRC_SIZE) into a segment in the crash
  region at crash time, and the core header's PT_LOAD for that range points at the copy;
- the **ELF core header** (EM_PPC64): a PT_NOTE per CPU, one for vmcoreinfo, a PT_LOAD per range
  of RAM outside the crash region, virtual addresses in the linear map (KERNELBASE + physical:
  the kernel runs there too, Book3S-64 has no separate text mapping), plus RTAS where it lies in
  the crash region (firmware state worth dumping, as kexec-tools adds it);
- the **capture kernel's memory**: usable is [0, end of the crash region) plus RTAS, OPAL and TCE
  tables (get_usable_memory_ranges(): a pseries guest fails early without its first memory
  block), with the crashed kernel's memory between the backup and the crash region, the backup
  copy and the core header in the reservation block (devicetree.py writes both);
- the command line: ``elfcorehdr=<address>`` (the tree also carries ``linux,elfcorehdr``) and
  the capture options the kernel's kdump documentation gives for ppc64.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...cmdline import split_cmdline
from ...core.elf import EM_PPC64
from ...core.memmap import RAM, Range, align_down, align_up, merge
from ...crash import CrashSetup
from ...crash.elfcore import build_elfcorehdr, dump_loads, elfcorehdr_size
from ...crash.facts import CrashFacts, read_crash_notes, read_vmcoreinfo
from ...errors import HostError, PlanError
from ...host.sysroot import as_sysroot
from .elf_kernel import KERNELBASE
from .platform import PlatformFacts

#: One CPU, interrupts polled, devices reset, no IRQ spreading (Documentation/admin-guide/kdump).
DEFAULT_CAPTURE_OPTIONS = "irqpoll maxcpus=1 noirqdistrib reset_devices"
#: The crashed kernel's memory the capture kernel overwrites: [0, 64 KiB) (BACKUP_SRC_END + 1).
BACKUP_SIZE = 0x10000
RESERVED = "Reserved"


def crash_facts(host):
    """CrashFacts of a ppc64 host: notes, vmcoreinfo, RAM, and the linear map (no text mapping)."""
    facts = getattr(host, "crash_facts", None)
    if facts is not None:
        return facts
    tree = as_sysroot(getattr(host, "sysroot", None) or "/")
    warnings = []
    vmcoreinfo = read_vmcoreinfo(tree)
    if vmcoreinfo is None:
        warnings.append("the kernel publishes no vmcoreinfo: dump tools (makedumpfile, the kernel log reader) "
                        "will not find its symbols in the vmcore")
    ram = host.memory_map.ram() if host.memory_map is not None else []
    if not ram:
        raise HostError("no System RAM to dump under %s" % tree.root)
    return CrashFacts(read_crash_notes(tree), vmcoreinfo, None, KERNELBASE, ram, warnings)


def usable_memory(region, platform):
    """The capture kernel's usable RAM: [0, region end), RTAS and the other firmware memory."""
    return merge([Range(0, region.end, RAM)] + [Range(r.start, r.end, RAM) for r in platform.keep])


def prepare(plan, host, cmdline, facts=None, platform=None):
    """Reserve the backup copy and the core header in the crash ``plan`` (top-down, so that the
    kernel gets the start of the region), fill the header, and return the CrashSetup whose
    ``memory_map`` is the capture kernel's view: usable RAM and reserved ranges."""
    facts = facts or crash_facts(host)
    platform = platform or PlatformFacts.read(host.sysroot or "/")
    region = plan.crash_region
    if region.start < BACKUP_SIZE:
        raise PlanError("the crash region %#x-%#x starts inside the first 64 KiB, which the capture kernel "
                        "overwrites; reserve it higher (crashkernel=SIZE without @offset)" % (region.start, region.end))
    page = plan.page_size
    seg = plan.reserve("backup", BACKUP_SIZE, top_down=True)
    seg.set_buffer(b"")  # zero-filled by the kernel; purgatory copies into it at crash time
    backup = (0, seg.mem, BACKUP_SIZE)
    regions = [region]
    loads = dump_loads(facts, regions, backup)
    loads.extend(_firmware_in_region(platform, region, page))
    loads.sort(key=lambda d: d["paddr"])
    hdr = plan.reserve("elfcorehdr", elfcorehdr_size(facts) + 64 * len(platform.keep), top_down=True)
    notes = [(a, s) for dummy_cpu, a, s in facts.notes]
    if facts.vmcoreinfo:
        notes.append(facts.vmcoreinfo)
    data = build_elfcorehdr(notes, loads, EM_PPC64)
    if len(data) > hdr.memsz:
        raise PlanError("the ELF core header grew to %d bytes, more than the %d reserved; a loader bug"
                        % (len(data), hdr.memsz))
    hdr.set_buffer(data)
    reserved = [Range(BACKUP_SIZE, region.start, RESERVED), Range(seg.mem, seg.mem + seg.memsz, RESERVED),
                Range(hdr.mem, hdr.mem + hdr.memsz, RESERVED)]
    capture = sorted(usable_memory(region, platform) + reserved)
    words = [w for w in split_cmdline(cmdline) if not w.startswith("elfcorehdr=")]
    full = " ".join(words + ["elfcorehdr=%#x" % hdr.mem])
    return CrashSetup(full, capture, backup, hdr.mem, len(data), loads, notes, list(facts.warnings))


def _firmware_in_region(platform, region, page):
    """PT_LOADs for firmware memory (RTAS) inside the crash region, widened to whole pages."""
    out = []
    for r in platform.keep:
        start, end = max(r.start, region.start), min(r.end, region.end)
        if start < end and r.type == "RTAS":
            start, end = align_down(start, page), min(align_up(end, page), region.end)
            out.append({"paddr": start, "offset": start, "size": end - start, "vaddr": KERNELBASE + start})
    return out
