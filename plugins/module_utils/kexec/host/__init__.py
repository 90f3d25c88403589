# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the loader needs to know about the running host: one typed value, read once.

Every reader takes a root path (``Sysroot``), so tests feed recorded trees from any architecture
on any machine; ``scripts/record_sysroot.sh`` copies exactly the files read here.  Optional files
that are missing (or unreadable, e.g. root-only ones when not root) give None; required ones that
cannot be read raise HostError saying what to do.  Nothing here writes anything.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import mmap
import os

from ..core.memmap import MemoryMap, Range
from ..errors import HostError
from ..machines import normalize_arch
from .devicetree import CRASH_BASE, CRASH_SIZE, chosen_crash_region
from .firmware_memmap import read_firmware_memmap
from .iomem import HiddenIomemError, IomemNode, crash_regions, parse_iomem
from .security import SECURE_BOOT_VAR, kernel_config, offered_syscalls, parse_lockdown, read_secure_boot
from .sysroot import BLOB, LISTING, Sysroot, as_sysroot, parse_u64

__all__ = ["Host", "IomemNode", "parse_iomem", "FILES", "DIRS", "EFI_FILES"]

#: Files Host.read looks at, relative to the sysroot (the recorder copies these).
FILES = (
    "proc/iomem",
    "proc/cmdline",
    "proc/meminfo",
    "proc/cpuinfo",
    "proc/sys/kernel/osrelease",
    "proc/sys/kernel/kexec_load_disabled",
    "proc/sys/kernel/arch",
    "sys/kernel/security/lockdown",
    "sys/kernel/boot_params/data",
    "sys/kernel/kexec_loaded",
    "sys/kernel/kexec_crash_loaded",
    "sys/kernel/kexec_crash_size",
    "sys/kernel/kexec/loaded",
    "sys/kernel/kexec/crash_loaded",
    "sys/kernel/kexec/crash_size",
    "sys/firmware/efi/systab",
    "sys/firmware/fdt",
    SECURE_BOOT_VAR,
    CRASH_BASE,
    CRASH_SIZE,
    "machine",
    "pagesize",
)
#: Directories Host.read looks at: existence (efi) or every file under them (memmap, the live device tree).
DIRS = ("sys/firmware/memmap", "sys/firmware/efi", "proc/device-tree")
#: Read from the same sysroot by the x86 EFI state reader (arch/x86_64/efi.py).
EFI_FILES = ("sys/firmware/efi/fw_vendor", "sys/firmware/efi/runtime", "sys/firmware/efi/config_table",
             "sys/firmware/efi/runtime-map")

#: Page sizes a kernel config can select, by option (arm64: 4/16/64 KiB; powerpc: 4/64 KiB).
PAGE_SIZE_OPTIONS = (
    ("CONFIG_ARM64_64K_PAGES", 65536), ("CONFIG_ARM64_16K_PAGES", 16384), ("CONFIG_ARM64_4K_PAGES", 4096),
    ("CONFIG_PPC_64K_PAGES", 65536), ("CONFIG_PPC_4K_PAGES", 4096),
)
#: A kernel command line is at most a few KiB (COMMAND_LINE_SIZE); a longer proc/cmdline is not one.
MAX_CMDLINE = 64 << 10


def _arch(tree):
    # The live host answers uname itself; a recorded tree carries the answer in a file named
    # "machine" at its root (the recorder writes `uname -m` there), or in the kernel's own
    # /proc/sys/kernel/arch when that was recorded.
    if tree.live:
        return normalize_arch(os.uname()[4])
    for rel in ("machine", "proc/sys/kernel/arch"):
        text = tree.read_text(rel)
        if text is not None and text.strip():
            return normalize_arch(text.strip())
    raise HostError(
        "%s records no architecture: write the output of `uname -m` to %s "
        "(scripts/record_sysroot.sh does)" % (tree.root, tree.path("machine"))
    )


def _page_size(tree, config):
    """The running kernel's page size: the live system's, else the recording's ``pagesize`` file,
    else the kernel config's choice; None when nothing says (the arch's default applies)."""
    if tree.live:
        return mmap.PAGESIZE
    text = tree.read_text("pagesize")
    if text is not None and text.strip():
        size = parse_u64(text.strip(), 10, tree.path("pagesize"))
        if size < 4096 or size & (size - 1) or size > 1 << 20:
            raise HostError("%s holds page size %d, not a power of two between 4 KiB and 1 MiB; record it "
                            "again (getconf PAGESIZE)" % (tree.path("pagesize"), size))
        return size
    for option, size in PAGE_SIZE_OPTIONS:
        if config and config.get(option) == "y":
            return size
    return None


def _meminfo_total(text, where):
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise HostError("%s has a malformed MemTotal line: %r; record it again" % (where, line[:80]))
            total = int(parts[1]) * 1024
            if total == 0 or total >= 1 << 64:
                raise HostError("%s says MemTotal is %s kB, which no running Linux host has; the recording is "
                                "corrupted (record it again)" % (where, parts[1]))
            return total
    return None


def _acpi_rsdp(text, where):
    # The EFI system table lists ACPI20=0x... (preferred) and ACPI=0x...; the next kernel needs
    # the RSDP when it cannot find it by scanning (EFI without runtime services in kexec).
    if text is None:
        return None
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("ACPI20", "ACPI"):
            found[key.strip()] = parse_u64(value.strip(), 16, where)
    return found.get("ACPI20", found.get("ACPI"))


def _la57(tree, arch, config):
    """True when the running x86_64 kernel uses 5-level paging: the CPU flag is on (the kernel
    clears it when it does not use it, e.g. with no5lvl) and the kernel was built with
    CONFIG_X86_5LEVEL (or its config is unknown); False otherwise."""
    if arch != "x86_64":
        return False
    text = tree.read_text("proc/cpuinfo", limit=LISTING)
    if text is None:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = line.partition(":")[2].split()
            return "la57" in flags and (config is None or config.get("CONFIG_X86_5LEVEL") == "y")
    return False


def _first_flag(tree, *rels):
    """The first of ``rels`` that exists, read as a flag (newer kernels moved the kexec files
    into /sys/kernel/kexec/)."""
    for rel in rels:
        value = tree.read_flag(rel)
        if value is not None:
            return value
    return None


class Host:
    """A plain value describing the running host, as far as kexec cares.

    Fields: arch (``uname -m``, normalized: x86_64, aarch64, ppc64le), page_size (the running
    kernel's, None when a recording does not say), la57 (x86_64 5-level paging in use), release,
    cmdline, memory_map (MemoryMap: firmware map, else iomem top level), iomem (list of IomemNode
    or None), crash_region (Range or None: the largest reservation), crash_regions (all of them),
    lockdown, kexec_load_disabled, efi, secure_boot, boot_params (x86 zero page bytes or None),
    acpi_rsdp, fdt (arm64: the flattened device tree the kernel booted with, bytes or None),
    kexec_loaded, kexec_crash_loaded, kexec_crash_size, mem_total (bytes, MemTotal), syscalls
    (which kexec syscalls the kernel config offers, when known), config_known, sysroot (where it
    was read, so arch code reads further files from the same tree), iomem_hidden (True when
    /proc/iomem was read without root: iomem and the crash region are then unknown, not absent),
    crash_facts (crash.facts.CrashFacts: not read here but by crash loads, which alone need them;
    tests set it).
    """

    FIELDS = (
        "arch", "page_size", "la57", "release", "cmdline", "memory_map", "iomem", "crash_region", "crash_regions",
        "lockdown", "kexec_load_disabled", "efi", "secure_boot", "boot_params", "acpi_rsdp", "fdt",
        "kexec_loaded", "kexec_crash_loaded", "kexec_crash_size", "mem_total", "syscalls", "sysroot",
        "iomem_hidden", "crash_facts",
    )

    def __init__(self, **fields):
        unknown = set(fields) - set(self.FIELDS)
        if unknown:
            raise TypeError("unknown Host fields: %s" % ", ".join(sorted(unknown)))
        for name in self.FIELDS:
            setattr(self, name, fields.get(name))
        if self.arch is not None:
            self.arch = normalize_arch(self.arch)
        if self.crash_regions is None:
            self.crash_regions = [self.crash_region] if self.crash_region is not None else []

    @classmethod
    def read(cls, sysroot="/"):
        """Read the host under ``sysroot`` ("/" for the live machine, or a Sysroot)."""
        tree = as_sysroot(sysroot)
        if not os.path.isdir(tree.root):
            raise HostError("sysroot %s is not a directory; pass the root of a live or recorded host" % tree.root)
        if tree.live:
            hint = "; is /proc mounted? kexec needs a Linux host"
        else:
            hint = "; %s is not a complete host recording (record it with scripts/record_sysroot.sh)" % tree.root
        release = tree.read_text("proc/sys/kernel/osrelease", required=True, hint=hint).strip()
        cmdline = tree.read_text("proc/cmdline", limit=MAX_CMDLINE, required=True, hint=hint)
        arch = _arch(tree)
        config = kernel_config(tree, release)

        iomem_text = tree.read_text("proc/iomem", limit=LISTING)
        firmware = read_firmware_memmap(tree)
        iomem_hidden = False
        try:
            iomem = parse_iomem(iomem_text, tree.path("proc/iomem")) if iomem_text is not None else None
        except HiddenIomemError:
            # Non-root: the firmware map (world-readable) is enough to plan a normal load; only
            # the crash region lives in iomem alone, and crash loads say so (see loader).
            if firmware is None:
                raise
            iomem, iomem_hidden = None, True
        if firmware is not None:
            memory_map = MemoryMap(firmware)
        elif iomem:
            # Without CONFIG_FIRMWARE_MEMMAP (arm64, ppc64) the iomem top level is the best map there is.
            memory_map = MemoryMap(Range(n.start, n.end, n.name) for n in iomem)
        else:
            raise HostError(
                "no memory map under %s: neither sys/firmware/memmap nor a readable proc/iomem; "
                "run as root on a kernel with /proc/iomem" % tree.root
            )
        if not memory_map.ram():
            raise HostError("the memory map under %s lists no System RAM; it is corrupted or was recorded wrongly"
                            % tree.root)

        regions = [Range(s, e, "Crash kernel") for s, e in crash_regions(iomem)]
        if not regions:
            # Kernels that keep the crash region out of /proc/iomem name it in the device tree.
            chosen = chosen_crash_region(tree)
            regions = [Range(chosen[0], chosen[1], "Crash kernel")] if chosen else []
        crash_region = max(regions, key=lambda r: (r.size, r.start)) if regions else None

        efi = tree.isdir("sys/firmware/efi")
        secure_boot = read_secure_boot(tree) if efi else False
        systab = tree.read_text("sys/firmware/efi/systab") if efi else None
        return cls(
            arch=arch,
            page_size=_page_size(tree, config),
            la57=_la57(tree, arch, config),
            release=release,
            cmdline=cmdline.strip(),
            memory_map=memory_map,
            iomem=iomem,
            iomem_hidden=iomem_hidden,
            crash_region=crash_region,
            crash_regions=regions,
            lockdown=parse_lockdown(tree.read_text("sys/kernel/security/lockdown"), tree.path("sys/kernel/security/lockdown")),
            kexec_load_disabled=tree.read_flag("proc/sys/kernel/kexec_load_disabled"),
            efi=efi,
            secure_boot=secure_boot,
            boot_params=tree.read_bytes("sys/kernel/boot_params/data") if arch == "x86_64" else None,
            acpi_rsdp=_acpi_rsdp(systab, tree.path("sys/firmware/efi/systab")),
            fdt=tree.read_bytes("sys/firmware/fdt", limit=BLOB) if arch == "aarch64" else None,
            kexec_loaded=_first_flag(tree, "sys/kernel/kexec/loaded", "sys/kernel/kexec_loaded"),
            kexec_crash_loaded=_first_flag(tree, "sys/kernel/kexec/crash_loaded", "sys/kernel/kexec_crash_loaded"),
            kexec_crash_size=tree.read_int("sys/kernel/kexec/crash_size") if tree.exists("sys/kernel/kexec/crash_size")
            else tree.read_int("sys/kernel/kexec_crash_size"),
            mem_total=_meminfo_total(tree.read_text("proc/meminfo", limit=LISTING), tree.path("proc/meminfo")),
            syscalls=offered_syscalls(config),
            sysroot=tree.root,
        )

    @property
    def totalram_pages(self):
        """The kernel's managed page count (MemTotal / page size), used by its half-of-RAM rule."""
        if self.mem_total is None:
            return None
        return self.mem_total // (self.page_size or 4096)

    def tree(self):
        """The Sysroot this host was read from (arch code reads further files through it)."""
        return Sysroot(self.sysroot or "/")

    def to_dict(self):
        """Plain-value form (boot_params and fdt as hex, ranges as dicts) for facts and JSON."""
        return {
            "arch": self.arch,
            "page_size": self.page_size,
            "la57": self.la57,
            "release": self.release,
            "cmdline": self.cmdline,
            "memory_map": self.memory_map.to_list() if self.memory_map is not None else None,
            "iomem": [n.to_dict() for n in self.iomem] if self.iomem is not None else None,
            "iomem_hidden": bool(self.iomem_hidden),
            "crash_region": self.crash_region.to_dict() if self.crash_region is not None else None,
            "crash_regions": [r.to_dict() for r in self.crash_regions],
            "lockdown": self.lockdown,
            "kexec_load_disabled": self.kexec_load_disabled,
            "efi": self.efi,
            "secure_boot": self.secure_boot,
            "boot_params": self.boot_params.hex() if self.boot_params is not None else None,
            "acpi_rsdp": self.acpi_rsdp,
            "fdt": self.fdt.hex() if self.fdt is not None else None,
            "kexec_loaded": self.kexec_loaded,
            "kexec_crash_loaded": self.kexec_crash_loaded,
            "kexec_crash_size": self.kexec_crash_size,
            "mem_total": self.mem_total,
            "syscalls": dict(self.syscalls) if self.syscalls is not None else None,
            "sysroot": self.sysroot,
        }

    def __eq__(self, other):
        return isinstance(other, Host) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "Host(arch=%r, release=%r, page_size=%r, efi=%r, crash_region=%r)" % (
            self.arch, self.release, self.page_size, self.efi, self.crash_region)
