# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an arm64 crash (kdump) kernel needs besides its image, for kexec_load.

kexec_file_load builds this inside the kernel (load_other_segments() in
arch/arm64/kernel/machine_kexec_file.c); with kexec_load the loader does:

- the **ELF core header** (crash/elfcore.py): a PT_NOTE per CPU and one for vmcoreinfo, a PT_LOAD
  for the kernel image mapping (the kernel asks crash_prepare_elf64_headers() for it too) and one
  per range of System RAM outside the crash regions, in the linear map;
- the capture kernel's ``/chosen``: ``linux,elfcorehdr`` (and a memory reservation for it) and
  ``linux,usable-memory-range`` (the crash regions, the main one first: the capture kernel caps
  its memory to the first and adds the second, early_init_dt_check_for_usable_mem_range()).
  Linux 6.1 reads both from /chosen, and no ``elfcorehdr=`` is needed on the command line.

Nothing needs a backup copy: unlike x86's low 640 KiB, an arm64 capture kernel touches no RAM
outside the crash region.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...cmdline import split_cmdline
from ...core.elf import EM_AARCH64
from ...crash import CrashSetup
from ...crash.elfcore import ELF_HEADER, PROGRAM_HEADER, PT_LOAD, dump_loads, elfcorehdr_size, fill_elfcorehdr
from ...crash.facts import CrashFacts

#: RHEL's kdump for aarch64 (rhkdump/kdump-utils gen-kdump-sysconfig.sh) appends these among
#: others (one CPU, devices reset, interrupts polled), the same three as on x86_64, so the kdump
#: role's kdump_capture_options default fits both.  RHEL also adds cma=0: Debian's arm64 kernels
#: set aside 64 MiB of CMA (CONFIG_CMA_SIZE_MBYTES), usable only by movable pages in the capture
#: kernel; add it with --capture-options where the crash region is tight.
DEFAULT_CAPTURE_OPTIONS = "irqpoll nr_cpus=1 reset_devices"

_INVALID = (1 << 64) - 1


def parse_kcore_layout(data):
    """(kernel_text, page_offset) from the start of /proc/kcore (its ELF program headers).

    On arm64 /proc/kcore gives a physical address only to RAM in the linear map and to the
    kernel image (KCORE_RAM, KCORE_TEXT: read_kcore's p_paddr); vmalloc, modules and vmemmap have
    none.  The kernel image lies inside the vmalloc area (since Linux 4.6), so the PT_LOAD with a
    physical address whose vaddr falls inside one without is the image; the others are the
    linear map, whose offset (vaddr - paddr) is page_offset: vaddr = page_offset + paddr for RAM
    (the linear map moves with KASLR too: seen at 0xffff3a9180000000 for 0x40000000 in the lab).
    Either is None when the headers do not show it.
    """
    if not data or len(data) < ELF_HEADER.size or data[:4] != b"\x7fELF" or data[4] != 2:
        return None, None
    fields = ELF_HEADER.unpack_from(data, 0)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    loads, virtual = [], []
    for i in range(phnum):
        off = phoff + i * phentsize
        if phentsize < PROGRAM_HEADER.size or off + PROGRAM_HEADER.size > len(data):
            break
        p_type, _flags, _offset, vaddr, paddr, _filesz, memsz, _align = PROGRAM_HEADER.unpack_from(data, off)
        if p_type != PT_LOAD or not memsz or vaddr < 1 << 63:
            continue
        if paddr == _INVALID:
            virtual.append((vaddr, vaddr + memsz))
        else:
            loads.append((vaddr, paddr, memsz))
    images = [ld for ld in loads if any(lo <= ld[0] < hi for lo, hi in virtual)]
    linear = [ld for ld in loads if ld not in images]
    text = None
    if len(images) == 1:
        vaddr, paddr, size = images[0]
        text = {"vaddr": vaddr, "paddr": paddr, "size": size}
    offsets = set((v - p) & _INVALID for v, p, _s in linear)
    return text, (offsets.pop() if len(offsets) == 1 else None)


def usable_regions(host, plan):
    """The capture kernel's memory: every crash region, the one the plan loads into first."""
    regions = list(getattr(host, "crash_regions", None) or [])
    main = plan.crash_region
    return [main] + [r for r in regions if r != main]


def prepare(plan, host, cmdline, facts=None):
    """Reserve and fill the core header in ``plan`` (a crash Plan) and return the CrashSetup:
    the command line without a stale ``elfcorehdr=``, and as ``memory_map`` the ranges that go
    into ``linux,usable-memory-range``.  ``facts`` defaults to CrashFacts.read() of the host."""
    if facts is None:
        facts = CrashFacts.of_host(host, kcore_layout=parse_kcore_layout)
    regions = usable_regions(host, plan)
    # Top-down: the kernel wants the 2 MiB aligned bottom of the region.
    hdr = plan.reserve("elfcorehdr", elfcorehdr_size(facts), top_down=True)
    loads = dump_loads(facts, regions)
    notes = fill_elfcorehdr(hdr, facts, loads, EM_AARCH64)
    full = " ".join(w for w in split_cmdline(cmdline) if not w.startswith("elfcorehdr="))
    return CrashSetup(full, regions, None, hdr.mem, hdr.bufsz, loads, notes, list(facts.warnings))
