"""What the loader needs to know about the running host, read once from sysfs and procfs.

Every reader takes ``sysroot`` so tests (and the lead's lab recordings) feed recorded trees;
``scripts/record_sysroot.sh`` copies exactly the files read here.  Optional files that are
missing (or unreadable, e.g. root-only ones when not root) give None; required ones that cannot
be read raise HostError saying what to do.  Nothing here writes anything.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from .errors import HostError
from .memmap import MemoryMap, Range

SECURE_BOOT_VAR = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0b98c3b0e8c"

#: Files Host.read looks at, relative to the sysroot (the recorder copies these).
FILES = (
    "proc/iomem",
    "proc/cmdline",
    "proc/meminfo",
    "proc/sys/kernel/osrelease",
    "proc/sys/kernel/kexec_load_disabled",
    "proc/sys/kernel/arch",
    "sys/kernel/security/lockdown",
    "sys/kernel/boot_params/data",
    "sys/kernel/kexec_loaded",
    "sys/kernel/kexec_crash_loaded",
    "sys/kernel/kexec_crash_size",
    "sys/firmware/efi/systab",
    SECURE_BOOT_VAR,
    "machine",
)
#: Directories Host.read looks at: existence (efi) or every file under them (memmap).
DIRS = ("sys/firmware/memmap", "sys/firmware/efi")
#: Read from the same sysroot by bootparams.EfiState.read (the recorder copies them too).
EFI_FILES = ("sys/firmware/efi/fw_vendor", "sys/firmware/efi/runtime", "sys/firmware/efi/config_table",
             "sys/firmware/efi/runtime-map")


class IomemNode:
    """One /proc/iomem line: [start, end) named ``name``, with its nested children."""

    __slots__ = ("start", "end", "name", "children")

    def __init__(self, start, end, name, children=None):
        self.start = start
        self.end = end
        self.name = name
        self.children = children if children is not None else []

    def walk(self):
        """This node and all descendants, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self):
        """Plain-value form with nested children."""
        return {"start": self.start, "end": self.end, "name": self.name, "children": [c.to_dict() for c in self.children]}

    def __eq__(self, other):
        return isinstance(other, IomemNode) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "IomemNode(%#x, %#x, %r, %d children)" % (self.start, self.end, self.name, len(self.children))


def _path(sysroot, rel):
    return os.path.join(sysroot, rel)


def _read_bytes(sysroot, rel, required=False, hint=""):
    """Bytes of a file; None when missing/unreadable unless required (then HostError)."""
    path = _path(sysroot, rel)
    try:
        with open(path, "rb") as f:
            return f.read()
    except (IOError, OSError) as exc:
        if not required:
            return None
        raise HostError("cannot read %s (%s)%s" % (path, getattr(exc, "strerror", None) or exc, hint))


def _read_text(sysroot, rel, required=False, hint=""):
    data = _read_bytes(sysroot, rel, required, hint)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HostError("%s is not text; the file is corrupted or not what Linux writes there" % _path(sysroot, rel))


def _read_int(sysroot, rel, base=10):
    text = _read_text(sysroot, rel)
    if text is None:
        return None
    try:
        return int(text.strip(), base)
    except ValueError:
        raise HostError("%s holds %r, not a number; the file is corrupted" % (_path(sysroot, rel), text.strip()[:40]))


def _read_flag(sysroot, rel):
    value = _read_int(sysroot, rel)
    return None if value is None else bool(value)


class HiddenIomemError(HostError):
    """/proc/iomem read as a non-root user: every address is zero."""


def parse_iomem(text, where="/proc/iomem"):
    """Parse /proc/iomem into a list of top-level IomemNodes (ends made half-open).

    Nesting is by indentation (two spaces per level); ``Kernel code`` and ``Crash kernel`` sit
    under ``System RAM``.  Raises HostError on any malformed line, and when every address is zero,
    which is what non-root readers see.
    """
    roots = []
    stack = []  # (depth, node)
    nonzero = False
    count = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if indent % 2 or "\t" in line[:indent + 1]:
            raise HostError("%s line %d is not indented in steps of two spaces: %r; re-read or re-record it" % (where, lineno, line[:80]))
        depth = indent // 2
        span, sep, name = stripped.partition(" : ")
        lo, dash, hi = span.partition("-")
        try:
            if not sep or not dash:
                raise ValueError(line)
            start, last = int(lo, 16), int(hi, 16)
        except ValueError:
            raise HostError("%s line %d is not 'start-end : name': %r; re-read or re-record it" % (where, lineno, line[:80]))
        if last < start or last >= 1 << 64:
            raise HostError("%s line %d has an end below its start or beyond 64 bits: %r" % (where, lineno, line[:80]))
        if start or last:
            nonzero = True
        node = IomemNode(start, last + 1, name.strip())
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if depth > 0:
            if not stack or stack[-1][0] != depth - 1:
                raise HostError("%s line %d is nested deeper than the line above allows: %r" % (where, lineno, line[:80]))
            stack[-1][1].children.append(node)
        else:
            roots.append(node)
        stack.append((depth, node))
        count += 1
    if count and not nonzero:
        raise HiddenIomemError("%s shows only zero addresses: the kernel hides them from non-root users; run as root (become: true)" % where)
    return roots


def read_firmware_memmap(sysroot):
    """Ranges from /sys/firmware/memmap/N/{start,end,type} (inclusive end there); None when absent."""
    base = _path(sysroot, "sys/firmware/memmap")
    try:
        names = os.listdir(base)
    except (IOError, OSError):
        return None
    entries = []
    for name in names:
        if not name.isdigit():
            continue
        rel = os.path.join("sys/firmware/memmap", name)
        start = _read_int(sysroot, os.path.join(rel, "start"), 16)
        end = _read_int(sysroot, os.path.join(rel, "end"), 16)
        rtype = _read_text(sysroot, os.path.join(rel, "type"))
        if start is None or end is None or rtype is None:
            raise HostError("%s is incomplete (needs start, end and type); re-record the memory map" % _path(sysroot, rel))
        if end < start or end >= 1 << 64:
            raise HostError("%s: end %#x below start %#x; the firmware map is corrupted" % (_path(sysroot, rel), end, start))
        entries.append(Range(start, end + 1, rtype.strip()))
    if not entries:
        return None
    return entries


def _lockdown(text):
    if text is None:
        return None
    left, sep, rest = text.partition("[")
    word, sep2, dummy = rest.partition("]")
    if not sep or not sep2 or not word.strip():
        raise HostError("sys/kernel/security/lockdown holds %r, without a [bracketed] mode; the file is corrupted" % text.strip()[:60])
    return word.strip()


def _meminfo_total(text):
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            try:
                return int(parts[1]) * 1024
            except (IndexError, ValueError):
                raise HostError("/proc/meminfo MemTotal line is malformed: %r" % line)
    return None


def _acpi_rsdp(text):
    # The EFI system table lists ACPI20=0x... (preferred) and ACPI=0x...; the next kernel needs
    # the RSDP when it cannot find it by scanning (EFI without runtime services in kexec).
    if text is None:
        return None
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("ACPI20", "ACPI"):
            try:
                found[key.strip()] = int(value.strip(), 16)
            except ValueError:
                raise HostError("sys/firmware/efi/systab line %r is malformed" % line)
    return found.get("ACPI20", found.get("ACPI"))


def _arch(sysroot):
    # The live host answers uname itself; a recorded tree carries the answer in a file named
    # "machine" at its root (the recorder writes `uname -m` there), or in the kernel's own
    # /proc/sys/kernel/arch when that was recorded.
    if os.path.abspath(sysroot) == "/":
        return os.uname()[4]
    for rel in ("machine", "proc/sys/kernel/arch"):
        text = _read_text(sysroot, rel)
        if text is not None and text.strip():
            return text.strip()
    raise HostError(
        "%s records no architecture: write the output of `uname -m` to %s "
        "(scripts/record_sysroot.sh does)" % (sysroot, _path(sysroot, "machine"))
    )


class Host:
    """A plain value describing the running host, as far as kexec cares.

    Fields: arch, release, cmdline, memory_map (MemoryMap: firmware map, else iomem top level),
    iomem (list of IomemNode or None), crash_region (Range or None: the largest ``Crash kernel``
    reservation), crash_regions (all of them), lockdown, kexec_load_disabled, efi, secure_boot,
    boot_params (bytes or None), acpi_rsdp, kexec_loaded, kexec_crash_loaded, kexec_crash_size,
    mem_total (bytes, MemTotal), syscalls (which kexec syscalls the kernel config offers, when
    known), sysroot (where it was read, so bootparams.EfiState.read can read the EFI runtime map
    from the same tree), iomem_hidden (True when /proc/iomem was read without root: iomem and the
    crash region are then unknown, not absent), crash_facts (crash.CrashFacts: not read here but
    by crash loads, which alone need them; tests set it).
    """

    FIELDS = (
        "arch", "release", "cmdline", "memory_map", "iomem", "crash_region", "crash_regions",
        "lockdown", "kexec_load_disabled", "efi", "secure_boot", "boot_params", "acpi_rsdp",
        "kexec_loaded", "kexec_crash_loaded", "kexec_crash_size", "mem_total", "syscalls", "sysroot",
        "iomem_hidden", "crash_facts",
    )

    def __init__(self, **fields):
        unknown = set(fields) - set(self.FIELDS)
        if unknown:
            raise TypeError("unknown Host fields: %s" % ", ".join(sorted(unknown)))
        for name in self.FIELDS:
            setattr(self, name, fields.get(name))
        if self.crash_regions is None:
            self.crash_regions = [self.crash_region] if self.crash_region is not None else []

    @classmethod
    def read(cls, sysroot="/"):
        """Read the host under ``sysroot`` ("/" for the live machine)."""
        if not os.path.isdir(sysroot):
            raise HostError("sysroot %s is not a directory; pass the root of a live or recorded host" % sysroot)
        release = _read_text(sysroot, "proc/sys/kernel/osrelease", required=True,
                             hint="; is /proc mounted? kexec needs a Linux host")
        cmdline = _read_text(sysroot, "proc/cmdline", required=True, hint="; is /proc mounted?")

        iomem_text = _read_text(sysroot, "proc/iomem")
        firmware = read_firmware_memmap(sysroot)
        iomem_hidden = False
        try:
            iomem = parse_iomem(iomem_text, _path(sysroot, "proc/iomem")) if iomem_text is not None else None
        except HiddenIomemError:
            # Non-root: the firmware map (world-readable) is enough to plan a normal load; only
            # the crash region lives in iomem alone, and crash loads say so (see loader).
            if firmware is None:
                raise
            iomem, iomem_hidden = None, True
        if firmware is not None:
            memory_map = MemoryMap(firmware)
        elif iomem:
            # Without CONFIG_FIRMWARE_MEMMAP the iomem top level is the best map there is.
            memory_map = MemoryMap(Range(n.start, n.end, n.name) for n in iomem)
        else:
            raise HostError(
                "no memory map under %s: neither sys/firmware/memmap nor a readable proc/iomem; "
                "run as root on a kernel with /proc/iomem" % sysroot
            )
        if not memory_map.ram():
            raise HostError("the memory map under %s lists no System RAM; it is corrupted or was recorded wrongly" % sysroot)

        crash_regions = []
        for root in iomem or ():
            for node in root.walk():
                if node.name == "Crash kernel":
                    crash_regions.append(Range(node.start, node.end, "Crash kernel"))
        crash_regions.sort()
        crash_region = max(crash_regions, key=lambda r: (r.size, r.start)) if crash_regions else None

        efi = os.path.isdir(_path(sysroot, "sys/firmware/efi"))
        secure_boot = None
        if efi:
            var = _read_bytes(sysroot, SECURE_BOOT_VAR)
            if var is not None:
                # efivarfs: 4 bytes of attributes, then the one-byte value.
                if len(var) < 5:
                    raise HostError("%s is %d bytes, expected 5; the efivar is corrupted" % (_path(sysroot, SECURE_BOOT_VAR), len(var)))
                secure_boot = var[4] == 1
        else:
            secure_boot = False

        crash_size = _read_int(sysroot, "sys/kernel/kexec_crash_size")
        return cls(
            arch=_arch(sysroot),
            release=release.strip(),
            cmdline=cmdline.strip(),
            memory_map=memory_map,
            iomem=iomem,
            iomem_hidden=iomem_hidden,
            crash_region=crash_region,
            crash_regions=crash_regions,
            lockdown=_lockdown(_read_text(sysroot, "sys/kernel/security/lockdown")),
            kexec_load_disabled=_read_flag(sysroot, "proc/sys/kernel/kexec_load_disabled"),
            efi=efi,
            secure_boot=secure_boot,
            boot_params=_read_bytes(sysroot, "sys/kernel/boot_params/data"),
            acpi_rsdp=_acpi_rsdp(_read_text(sysroot, "sys/firmware/efi/systab")) if efi else None,
            kexec_loaded=_read_flag(sysroot, "sys/kernel/kexec_loaded"),
            kexec_crash_loaded=_read_flag(sysroot, "sys/kernel/kexec_crash_loaded"),
            kexec_crash_size=crash_size,
            mem_total=_meminfo_total(_read_text(sysroot, "proc/meminfo")),
            syscalls=_syscalls(sysroot, release.strip()),
            sysroot=sysroot,
        )

    @property
    def totalram_pages(self):
        """The kernel's managed page count (MemTotal / 4 KiB), used by its half-of-RAM rule."""
        return None if self.mem_total is None else self.mem_total // 4096

    def to_dict(self):
        """Plain-value form (boot_params as hex, ranges as dicts) for facts and JSON."""
        return {
            "arch": self.arch,
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
        return "Host(arch=%r, release=%r, efi=%r, crash_region=%r)" % (self.arch, self.release, self.efi, self.crash_region)


def _syscalls(sysroot, release):
    """Which kexec syscalls the running kernel was built with, from boot/config-<release>.

    None when the config is not installed: the syscall layer then finds out by trying.
    """
    text = _read_text(sysroot, os.path.join("boot", "config-" + release)) if release and "/" not in release else None
    if text is None:
        return None
    opts = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_KEXEC"):
            opts[key] = value.strip()
    return {
        "kexec_load": opts.get("CONFIG_KEXEC") == "y",
        "kexec_file_load": opts.get("CONFIG_KEXEC_FILE") == "y",
        "kexec_sig_force": opts.get("CONFIG_KEXEC_SIG_FORCE") == "y",
    }
