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
    kernel image (KCORE_RAM, KCORE_TEXT: read_kcore's p_paddr), so among the PT_LOADs with one,
    the linear map is the offset (vaddr - paddr) most of them share, and the kernel image is the
    one at another offset, above the linear map.  page_offset is that linear-map offset, so that
    vaddr = page_offset + paddr for RAM.  Either is None when the headers do not show it.
    """
    if not data or len(data) < ELF_HEADER.size or data[:4] != b"\x7fELF" or data[4] != 2:
        return None, None
    fields = ELF_HEADER.unpack_from(data, 0)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    loads = []
    for i in range(phnum):
        off = phoff + i * phentsize
        if phentsize < PROGRAM_HEADER.size or off + PROGRAM_HEADER.size > len(data):
            break
        p_type, _flags, _offset, vaddr, paddr, _filesz, memsz, _align = PROGRAM_HEADER.unpack_from(data, off)
        if p_type == PT_LOAD and paddr != _INVALID and memsz and vaddr >= 1 << 63:
            loads.append((vaddr, paddr, memsz))
    if not loads:
        return None, None
    counts = {}
    for vaddr, paddr, _size in loads:
        delta = (vaddr - paddr) & _INVALID
        counts[delta] = counts.get(delta, 0) + 1
    linear = max(sorted(counts), key=lambda d: counts[d])
    top_linear = max(v + s for v, p, s in loads if (v - p) & _INVALID == linear)
    others = [(v, p, s) for v, p, s in loads if (v - p) & _INVALID != linear and v >= top_linear]
    text = None
    if others:
        vaddr, paddr, size = max(others)
        text = {"vaddr": vaddr, "paddr": paddr, "size": size}
    return text, linear


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
