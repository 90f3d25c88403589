"""The x86 zero page (struct boot_params) handed to a kernel entered at its 64-bit entry point.

Layout and rules come from Documentation/arch/x86/boot.rst and zero-page.rst.  We build the page
from nothing rather than patching the running kernel's copy, and take from the running kernel only
what the firmware told it and a new kernel cannot rediscover after kexec: EFI system table and
runtime mappings, the ACPI RSDP address, EDD disk data, screen_info, hardware_subarch.

Everything lives in one segment so a single placement decides all pointers:

    +0x0000  zero page (4096 bytes)
    +0x1000  command line, NUL-terminated
    ...      setup_data nodes (SETUP_E820_EXT for e820 entries past 128, SETUP_EFI), 16-aligned
    ...      EFI runtime memory map (what efi_info.efi_memmap points at)

EFI decision.  A kernel that booted through EFI has already called SetVirtualAddressMap(), which
firmware allows once; the next kernel may only use EFI runtime services if it is told the *same*
virtual mappings (the runtime map) plus the firmware table addresses (SETUP_EFI).  When
/sys/firmware/efi/runtime-map is missing (kernel without CONFIG_EFI_RUNTIME_MAP, or booted with
efi=noruntime), we leave efi_info zeroed, like kexec-tools: the new kernel then boots as a non-EFI
kernel (no EFI variables, no EFI reboot), finds ACPI through acpi_rsdp_addr, and we report a
warning.  We do not add ``noefi`` to the command line: zeroed efi_info already means "not booted
through EFI" and the user's command line stays exactly what they asked for.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

from .errors import HostError, ImageFormatError

ZERO_PAGE_SIZE = 4096

# struct boot_params offsets (zero-page.rst)
OFF_SCREEN_INFO = 0x000
SCREEN_INFO_SIZE = 0x40
OFF_EXT_MEM_K = 0x002           # screen_info.ext_mem_k (u16)
OFF_ACPI_RSDP_ADDR = 0x070
OFF_EXT_RAMDISK_IMAGE = 0x0C0
OFF_EXT_RAMDISK_SIZE = 0x0C4
OFF_EXT_CMD_LINE_PTR = 0x0C8
OFF_EFI_INFO = 0x1C0
EFI_INFO_SIZE = 0x20
OFF_ALT_MEM_K = 0x1E0
OFF_E820_ENTRIES = 0x1E8
OFF_EDDBUF_ENTRIES = 0x1E9
OFF_EDD_MBR_SIG_BUF_ENTRIES = 0x1EA
OFF_SECURE_BOOT = 0x1EC
OFF_SENTINEL = 0x1EF
OFF_HDR = 0x1F1
HDR_END = 0x290
OFF_EDD_MBR_SIG_BUFFER = 0x290
EDD_MBR_SIG_BUFFER_SIZE = 16 * 4
OFF_E820_TABLE = 0x2D0
OFF_EDDBUF = 0xD00
EDDBUF_SIZE = 6 * 82

# setup header fields we own (absolute offsets in the zero page)
OFF_TYPE_OF_LOADER = 0x210
OFF_LOADFLAGS = 0x211
OFF_RAMDISK_IMAGE = 0x218
OFF_RAMDISK_SIZE = 0x21C
OFF_HEAP_END_PTR = 0x224
OFF_CMD_LINE_PTR = 0x228
OFF_HARDWARE_SUBARCH = 0x23C
OFF_SETUP_DATA = 0x250

E820_MAX_ENTRIES_ZEROPAGE = 128
E820_ENTRY = struct.Struct("<QQI")

E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3
E820_NVS = 4
E820_UNUSABLE = 5
E820_PMEM = 7
E820_PRAM = 12
E820_SOFT_RESERVED = 0xEFFFFFFF

SETUP_E820_EXT = 1
SETUP_EFI = 4
SETUP_DATA_HDR = struct.Struct("<QII")  # next, type, len

# boot.rst: type_of_loader 0xFF means "undefined"; we have no assigned loader ID and must not
# claim kexec-tools' (0xD).
TYPE_OF_LOADER = 0xFF
LOADED_HIGH = 0x01

EFI_INFO = struct.Struct("<4sIIIIIII")  # signature systab memdesc_size memdesc_version memmap memmap_size systab_hi memmap_hi
EFI_MEMDESC = struct.Struct("<IIQQQQ")  # type pad phys virt num_pages attribute
EFI_SETUP_DATA = struct.Struct("<QQQQ64x")  # fw_vendor runtime(unused since 5.x) tables smbios reserved[8]
EFI64_SIGNATURE = b"EL64"

# /sys/firmware/memmap and /proc/iomem type names, lower-cased, to e820 types.
_TYPE_NAMES = {
    "system ram": E820_RAM,
    "ram": E820_RAM,
    "usable": E820_RAM,
    "reserved": E820_RESERVED,
    "acpi tables": E820_ACPI,
    "acpi data": E820_ACPI,
    "acpi": E820_ACPI,
    "acpi non-volatile storage": E820_NVS,
    "acpi nvs": E820_NVS,
    "nvs": E820_NVS,
    "unusable memory": E820_UNUSABLE,
    "unusable": E820_UNUSABLE,
    "persistent memory": E820_PMEM,
    "pmem": E820_PMEM,
    "persistent memory (legacy)": E820_PRAM,
    "pram": E820_PRAM,
    "soft reserved": E820_SOFT_RESERVED,
}


def e820_type(value):
    """e820 type number for a memory-map range type (int, e820 name, or sysfs/iomem name).

    Unknown names map to reserved: telling a kernel that RAM is reserved wastes it, the other way
    round corrupts firmware data.
    """
    if isinstance(value, int):
        return value
    name = getattr(value, "value", value)  # enum members
    if isinstance(name, int):
        return name
    return _TYPE_NAMES.get(str(name).strip().lower(), E820_RESERVED)


def e820_entries(memory_map):
    """[(addr, size, type)] sorted by address from a MemoryMap, list of Range, or tuples.

    Ranges are half-open [start, end) as in memmap.Range; tuples may be (start, end, type).
    """
    if memory_map is None:
        return []
    ranges = memory_map
    if hasattr(memory_map, "ranges"):
        ranges = memory_map.ranges
        if callable(ranges):
            ranges = ranges()
    out = []
    for r in ranges:
        if isinstance(r, dict):
            start, end, typ = r["start"], r["end"], r.get("type", E820_RAM)
        elif hasattr(r, "start"):
            start, end, typ = r.start, r.end, getattr(r, "type", E820_RAM)
        else:
            start, end, typ = r
        if end <= start:
            continue
        out.append((start, end - start, e820_type(typ)))
    out.sort()
    return out


class EfiMemoryDescriptor:
    """One EFI runtime-map entry as /sys/firmware/efi/runtime-map/<n>/ shows it."""

    __slots__ = ("type", "phys_addr", "virt_addr", "num_pages", "attribute")

    def __init__(self, type, phys_addr, virt_addr, num_pages, attribute):  # pylint: disable=redefined-builtin
        self.type = type
        self.phys_addr = phys_addr
        self.virt_addr = virt_addr
        self.num_pages = num_pages
        self.attribute = attribute

    def pack(self):
        """The 40-byte efi_memory_desc_t."""
        return EFI_MEMDESC.pack(self.type, 0, self.phys_addr, self.virt_addr, self.num_pages,
                                self.attribute)

    def to_dict(self):
        """JSON-friendly dict."""
        return {k: getattr(self, k) for k in self.__slots__}

    def __eq__(self, other):
        return isinstance(other, EfiMemoryDescriptor) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other

    def __repr__(self):
        return "EfiMemoryDescriptor(type=%d, phys=0x%x, virt=0x%x, pages=%d)" % (
            self.type, self.phys_addr, self.virt_addr, self.num_pages)


class EfiState:
    """What a new kernel needs to keep using EFI after kexec (a plain value).

    ``loader_signature``/``systab``/``memdesc_version`` come from the running kernel's
    boot_params.efi_info; ``fw_vendor``/``runtime``/``config_table``/``smbios`` and the
    ``runtime_map`` from /sys/firmware/efi.  ``usable`` says whether all of it is present.
    """

    def __init__(self, loader_signature=b"", systab=0, memdesc_version=0, fw_vendor=0, runtime=0,
                 config_table=0, smbios=0, runtime_map=(), secure_boot=0, problem=None):
        self.loader_signature = bytes(loader_signature)
        self.systab = systab
        self.memdesc_version = memdesc_version
        self.fw_vendor = fw_vendor
        self.runtime = runtime
        self.config_table = config_table
        self.smbios = smbios
        self.runtime_map = list(runtime_map)
        self.secure_boot = secure_boot
        self.problem = problem

    @property
    def usable(self):
        """True if efi_info can be passed on (otherwise ``problem`` says why not)."""
        return self.problem is None

    @classmethod
    def read(cls, sysroot="/", boot_params=None):
        """Read the EFI state under ``sysroot``; None if the host did not boot through EFI."""
        efi_dir = os.path.join(sysroot, "sys", "firmware", "efi")
        if not os.path.isdir(efi_dir):
            return None
        if boot_params is None:
            boot_params = _read_file(os.path.join(sysroot, "sys", "kernel", "boot_params", "data"))
        sig, systab, memdesc_version, secure_boot = b"", 0, 0, 0
        problem = None
        if boot_params is not None and len(boot_params) >= OFF_EFI_INFO + EFI_INFO_SIZE:
            f = EFI_INFO.unpack_from(boot_params, OFF_EFI_INFO)
            sig, systab, memdesc_version, systab_hi = f[0], f[1], f[3], f[6]
            systab |= systab_hi << 32
            secure_boot = boot_params[OFF_SECURE_BOOT]
            if f[5] == 0:
                problem = "the running kernel's efi_info has no memory map (booted with noefi?)"
            elif memdesc_version != 1:
                problem = "EFI memory descriptor version %d is not supported" % memdesc_version
        else:
            problem = "/sys/kernel/boot_params/data is not readable, so efi_info is unknown"
        values = {}
        for name in ("fw_vendor", "runtime", "config_table"):
            values[name] = _read_hex(os.path.join(efi_dir, name))
            if values[name] is None and problem is None:
                problem = "%s is missing" % os.path.join("/sys/firmware/efi", name)
        smbios = 0
        systab_text = _read_file(os.path.join(efi_dir, "systab"))
        if systab_text is not None:
            for line in systab_text.decode("ascii", "replace").splitlines():
                if line.startswith("SMBIOS="):
                    smbios = _parse_int(line.split("=", 1)[1]) or 0
        runtime_map = read_runtime_map(os.path.join(efi_dir, "runtime-map"))
        if not runtime_map and problem is None:
            problem = ("/sys/firmware/efi/runtime-map is missing or empty (kernel built without "
                       "CONFIG_EFI_RUNTIME_MAP, or booted with efi=noruntime)")
        return cls(sig, systab, memdesc_version, values.get("fw_vendor") or 0,
                   values.get("runtime") or 0, values.get("config_table") or 0, smbios,
                   runtime_map, secure_boot, problem)

    def to_dict(self):
        """JSON-friendly dict."""
        return {
            "loader_signature": self.loader_signature.decode("latin-1"),
            "systab": self.systab, "memdesc_version": self.memdesc_version,
            "fw_vendor": self.fw_vendor, "runtime": self.runtime,
            "config_table": self.config_table, "smbios": self.smbios,
            "runtime_map": [d.to_dict() for d in self.runtime_map],
            "secure_boot": self.secure_boot, "problem": self.problem,
        }

    def __eq__(self, other):
        return isinstance(other, EfiState) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other


def read_runtime_map(path):
    """EfiMemoryDescriptors from a runtime-map directory, in its numeric order ([] if absent)."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    out = []
    for name in sorted((n for n in names if n.isdigit()), key=int):
        d = os.path.join(path, name)
        vals = [_read_hex(os.path.join(d, f))
                for f in ("type", "phys_addr", "virt_addr", "num_pages", "attribute")]
        if any(v is None for v in vals):
            raise HostError("EFI runtime map entry %s is incomplete; cannot pass EFI to the new "
                            "kernel" % d)
        out.append(EfiMemoryDescriptor(*vals))
    return out


def _read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except (IOError, OSError):
        return None


def _parse_int(text):
    try:
        return int(text.strip(), 0)
    except ValueError:
        try:
            return int(text.strip(), 16)
        except ValueError:
            return None


def _read_hex(path):
    data = _read_file(path)
    if data is None:
        return None
    return _parse_int(data.decode("ascii", "replace"))


class BootParamsContext:
    """Host facts the zero page copies, gathered once (so building is pure).

    ``boot_params``: the running kernel's zero page (/sys/kernel/boot_params/data) or None;
    ``e820``: [(addr, size, type)]; ``acpi_rsdp``: int or None; ``efi``: EfiState or None.
    """

    def __init__(self, e820, boot_params=None, acpi_rsdp=None, efi=None, warnings=()):
        self.e820 = list(e820)
        self.boot_params = bytes(boot_params) if boot_params is not None else None
        self.acpi_rsdp = acpi_rsdp
        self.efi = efi
        self.warnings = list(warnings)

    @classmethod
    def from_host(cls, host, memory_map=None, efi=None, acpi_rsdp=None, boot_params=None):
        """Collect the context from a host.Host value; explicit arguments win."""
        if memory_map is None:
            memory_map = getattr(host, "memory_map", None)
        e820 = e820_entries(memory_map)
        if not e820:
            raise HostError("the host memory map is empty; cannot describe memory to the new kernel")
        if boot_params is None:
            boot_params = getattr(host, "boot_params", None)
        if acpi_rsdp is None:
            acpi_rsdp = getattr(host, "acpi_rsdp", None)
        if acpi_rsdp is None and boot_params is not None and len(boot_params) >= OFF_ACPI_RSDP_ADDR + 8:
            acpi_rsdp = struct.unpack_from("<Q", boot_params, OFF_ACPI_RSDP_ADDR)[0] or None
        warnings = []
        if efi is None:
            efi = _efi_from_host(host, boot_params)
        if efi is not None and not efi.usable:
            warnings.append(
                "EFI is not passed to the new kernel (%s): it will boot without EFI runtime "
                "services and find ACPI through acpi_rsdp_addr" % efi.problem)
            if not acpi_rsdp:
                warnings.append("the ACPI RSDP address is unknown too: the new kernel may find no "
                                "ACPI tables on an EFI-only machine")
        return cls(e820, boot_params, acpi_rsdp, efi, warnings)


def _efi_from_host(host, boot_params):
    """EfiState from whatever the host value carries (EfiState, dict, or a sysroot to read)."""
    for attr in ("efi_state", "efi"):
        value = getattr(host, attr, None)
        if isinstance(value, EfiState):
            return value
        if isinstance(value, dict) and "runtime_map" in value:
            return _efi_from_dict(value)
    if getattr(host, "efi", False):
        root = getattr(host, "sysroot", None) or getattr(host, "root", None)
        if root:
            return EfiState.read(root, boot_params)
        return EfiState(problem="the host booted through EFI but its EFI state was not recorded")
    return None


def _efi_from_dict(d):
    sig = d.get("loader_signature", b"")
    if isinstance(sig, str):
        sig = sig.encode("latin-1")
    rmap = [m if isinstance(m, EfiMemoryDescriptor) else EfiMemoryDescriptor(
        m["type"], m["phys_addr"], m["virt_addr"], m["num_pages"], m["attribute"])
        for m in d.get("runtime_map", ())]
    return EfiState(sig, d.get("systab", 0), d.get("memdesc_version", 0), d.get("fw_vendor", 0),
                    d.get("runtime", 0), d.get("config_table", 0), d.get("smbios", 0), rmap,
                    d.get("secure_boot", 0), d.get("problem"))


class BuiltBootParams:
    """Result of BootParamsLayout.build(): the segment bytes and where things ended up."""

    def __init__(self, data, cmdline_addr, efi, warnings):
        self.data = data
        self.cmdline_addr = cmdline_addr
        self.efi = efi
        self.warnings = warnings


def _align16(n):
    return (n + 15) & ~15


class BootParamsLayout:
    """Sizes and offsets of the boot_params segment, known before its address is."""

    def __init__(self, cmdline, ctx):
        self.cmdline = bytes(cmdline)
        self.ctx = ctx
        off = ZERO_PAGE_SIZE
        self.cmdline_offset = off
        off = _align16(off + len(self.cmdline) + 1)
        self.e820_zero = ctx.e820[:E820_MAX_ENTRIES_ZEROPAGE]
        self.e820_ext = ctx.e820[E820_MAX_ENTRIES_ZEROPAGE:]
        self.e820_ext_offset = None
        if self.e820_ext:
            self.e820_ext_offset = off
            off = _align16(off + SETUP_DATA_HDR.size + E820_ENTRY.size * len(self.e820_ext))
        self.efi = ctx.efi if ctx.efi is not None and ctx.efi.usable else None
        self.efi_setup_offset = self.efi_map_offset = None
        if self.efi is not None:
            self.efi_setup_offset = off
            off = _align16(off + SETUP_DATA_HDR.size + EFI_SETUP_DATA.size)
            self.efi_map_offset = off
            off = _align16(off + EFI_MEMDESC.size * len(self.efi.runtime_map))
        self.size = off

    def build(self, header, addr, initrd_addr=0, initrd_size=0):
        """Return BuiltBootParams for a segment placed at physical ``addr``.

        ``header`` is the image's SetupHeader (its raw bytes are copied in) or raw header bytes
        starting at offset 0x1f1.
        """
        raw = getattr(header, "raw", header)
        cmdline_size = getattr(header, "cmdline_size", None)
        if cmdline_size and len(self.cmdline) > cmdline_size:
            raise ImageFormatError(
                "kernel command line is %d bytes but this kernel accepts at most %d (cmdline_size)"
                % (len(self.cmdline), cmdline_size))
        ctx = self.ctx
        buf = bytearray(self.size)
        running = ctx.boot_params
        if running is not None and len(running) >= ZERO_PAGE_SIZE:
            # What the firmware told the running kernel and a new one cannot probe again: the
            # kernel's own kexec_file loader copies the same fields.
            buf[OFF_SCREEN_INFO:OFF_SCREEN_INFO + SCREEN_INFO_SIZE] = \
                running[OFF_SCREEN_INFO:OFF_SCREEN_INFO + SCREEN_INFO_SIZE]
            buf[OFF_EDDBUF_ENTRIES] = running[OFF_EDDBUF_ENTRIES]
            buf[OFF_EDD_MBR_SIG_BUF_ENTRIES] = running[OFF_EDD_MBR_SIG_BUF_ENTRIES]
            buf[OFF_EDD_MBR_SIG_BUFFER:OFF_EDD_MBR_SIG_BUFFER + EDD_MBR_SIG_BUFFER_SIZE] = \
                running[OFF_EDD_MBR_SIG_BUFFER:OFF_EDD_MBR_SIG_BUFFER + EDD_MBR_SIG_BUFFER_SIZE]
            buf[OFF_EDDBUF:OFF_EDDBUF + EDDBUF_SIZE] = running[OFF_EDDBUF:OFF_EDDBUF + EDDBUF_SIZE]
        else:
            # No record of the boot video mode: describe an 80x25 VGA text console (the default
            # kexec-tools uses too), which every x86 kernel understands.
            buf[0x06] = 3                               # orig_video_mode
            buf[0x07] = 80                              # orig_video_cols
            buf[0x0E] = 25                              # orig_video_lines
            buf[0x0F] = 1                               # orig_video_isVGA
            struct.pack_into("<H", buf, 0x10, 16)       # orig_video_points
        # The header goes in verbatim, then we patch the fields a boot loader owns.
        end = min(OFF_HDR + len(raw), HDR_END)
        buf[OFF_HDR:end] = raw[:end - OFF_HDR]
        buf[OFF_TYPE_OF_LOADER] = TYPE_OF_LOADER
        # Only LOADED_HIGH survives: no heap (CAN_USE_HEAP is for the 16-bit entry), no QUIET,
        # KEEP_SEGMENTS is obsolete, KASLR_FLAG is the kernel's own output.
        buf[OFF_LOADFLAGS] &= LOADED_HIGH
        struct.pack_into("<H", buf, OFF_HEAP_END_PTR, 0)
        if running is not None and len(running) >= OFF_HARDWARE_SUBARCH + 4:
            buf[OFF_HARDWARE_SUBARCH:OFF_HARDWARE_SUBARCH + 4] = \
                running[OFF_HARDWARE_SUBARCH:OFF_HARDWARE_SUBARCH + 4]
        buf[OFF_SENTINEL] = 0

        cmdline_addr = addr + self.cmdline_offset
        buf[self.cmdline_offset:self.cmdline_offset + len(self.cmdline)] = self.cmdline
        struct.pack_into("<I", buf, OFF_CMD_LINE_PTR, cmdline_addr & 0xFFFFFFFF)
        struct.pack_into("<I", buf, OFF_EXT_CMD_LINE_PTR, cmdline_addr >> 32)

        struct.pack_into("<I", buf, OFF_RAMDISK_IMAGE, initrd_addr & 0xFFFFFFFF)
        struct.pack_into("<I", buf, OFF_RAMDISK_SIZE, initrd_size & 0xFFFFFFFF)
        struct.pack_into("<I", buf, OFF_EXT_RAMDISK_IMAGE, initrd_addr >> 32)
        struct.pack_into("<I", buf, OFF_EXT_RAMDISK_SIZE, initrd_size >> 32)

        struct.pack_into("<Q", buf, OFF_ACPI_RSDP_ADDR, ctx.acpi_rsdp or 0)

        self._fill_e820(buf)
        setup_data_head = 0
        if self.e820_ext:
            off = self.e820_ext_offset
            SETUP_DATA_HDR.pack_into(buf, off, setup_data_head, SETUP_E820_EXT,
                                     E820_ENTRY.size * len(self.e820_ext))
            pos = off + SETUP_DATA_HDR.size
            for entry in self.e820_ext:
                E820_ENTRY.pack_into(buf, pos, *entry)
                pos += E820_ENTRY.size
            setup_data_head = addr + off
        warnings = []
        if self.efi is not None:
            setup_data_head = self._fill_efi(buf, addr, setup_data_head)
        struct.pack_into("<Q", buf, OFF_SETUP_DATA, setup_data_head)
        return BuiltBootParams(bytes(buf), cmdline_addr, self.efi is not None, warnings)

    def _fill_e820(self, buf):
        buf[OFF_E820_ENTRIES] = len(self.e820_zero)
        pos = OFF_E820_TABLE
        ext_mem_k = alt_mem_k = 0
        for addr, size, typ in self.e820_zero:
            E820_ENTRY.pack_into(buf, pos, addr, size, typ)
            pos += E820_ENTRY.size
        for addr, size, typ in self.ctx.e820:
            # Legacy "memory above 1 MiB" sizes, for kernels that still look at them.
            last = addr + size - 1
            if typ == E820_RAM and addr <= 0x100000 < last:
                mem_k = (last >> 10) - (0x100000 >> 10)
                ext_mem_k = min(mem_k, 0xFC00)
                alt_mem_k = min(mem_k, 0xFFFFFFFF)
        struct.pack_into("<H", buf, OFF_EXT_MEM_K, ext_mem_k)
        struct.pack_into("<I", buf, OFF_ALT_MEM_K, alt_mem_k)

    def _fill_efi(self, buf, addr, setup_data_head):
        efi = self.efi
        map_addr = addr + self.efi_map_offset
        map_size = EFI_MEMDESC.size * len(efi.runtime_map)
        EFI_INFO.pack_into(buf, OFF_EFI_INFO, efi.loader_signature or EFI64_SIGNATURE,
                           efi.systab & 0xFFFFFFFF, EFI_MEMDESC.size, efi.memdesc_version,
                           map_addr & 0xFFFFFFFF, map_size, efi.systab >> 32, map_addr >> 32)
        buf[OFF_SECURE_BOOT] = efi.secure_boot
        pos = self.efi_map_offset
        for desc in efi.runtime_map:
            buf[pos:pos + EFI_MEMDESC.size] = desc.pack()
            pos += EFI_MEMDESC.size
        off = self.efi_setup_offset
        SETUP_DATA_HDR.pack_into(buf, off, setup_data_head, SETUP_EFI, EFI_SETUP_DATA.size)
        EFI_SETUP_DATA.pack_into(buf, off + SETUP_DATA_HDR.size, efi.fw_vendor, efi.runtime,
                                 efi.config_table, efi.smbios)
        return addr + off


def normalize_cmdline(cmdline):
    """Command line as bytes without a trailing NUL; str is encoded as UTF-8."""
    if cmdline is None:
        return b""
    if isinstance(cmdline, str):
        cmdline = cmdline.encode("utf-8")
    cmdline = bytes(cmdline).rstrip(b"\0")
    if b"\0" in cmdline:
        raise ImageFormatError("kernel command line contains a NUL byte; the kernel would stop "
                               "reading it there")
    return cmdline


def build_boot_params(header, memory_map, addr, cmdline, initrd_addr=0, initrd_size=0,
                      boot_params=None, acpi_rsdp=None, efi=None):
    """The whole boot_params segment (zero page, cmdline, setup_data) for placement at ``addr``.

    ``memory_map`` is what the new kernel will believe about memory: the host's firmware map
    for a normal kexec, a crash-specific map for a crash kernel.  Returns BuiltBootParams.
    """
    ctx = BootParamsContext(e820_entries(memory_map), boot_params, acpi_rsdp, efi)
    layout = BootParamsLayout(normalize_cmdline(cmdline), ctx)
    built = layout.build(header, addr, initrd_addr, initrd_size)
    built.warnings = ctx.warnings + built.warnings
    return built


def parse_zero_page(buf):
    """Decode the fields we write from a zero page (tests, `status`, reading the running kernel)."""
    if len(buf) < ZERO_PAGE_SIZE:
        raise ImageFormatError("boot_params is %d bytes, expected at least %d"
                               % (len(buf), ZERO_PAGE_SIZE))

    def u8(off):
        return buf[off]

    def u16(off):
        return struct.unpack_from("<H", buf, off)[0]

    def u32(off):
        return struct.unpack_from("<I", buf, off)[0]

    def u64(off):
        return struct.unpack_from("<Q", buf, off)[0]

    n = min(u8(OFF_E820_ENTRIES), E820_MAX_ENTRIES_ZEROPAGE)
    e820 = [E820_ENTRY.unpack_from(buf, OFF_E820_TABLE + i * E820_ENTRY.size) for i in range(n)]
    efi = EFI_INFO.unpack_from(buf, OFF_EFI_INFO)
    return {
        "ext_mem_k": u16(OFF_EXT_MEM_K),
        "alt_mem_k": u32(OFF_ALT_MEM_K),
        "acpi_rsdp_addr": u64(OFF_ACPI_RSDP_ADDR),
        "cmd_line_ptr": u32(OFF_CMD_LINE_PTR) | (u32(OFF_EXT_CMD_LINE_PTR) << 32),
        "ramdisk_image": u32(OFF_RAMDISK_IMAGE) | (u32(OFF_EXT_RAMDISK_IMAGE) << 32),
        "ramdisk_size": u32(OFF_RAMDISK_SIZE) | (u32(OFF_EXT_RAMDISK_SIZE) << 32),
        "type_of_loader": u8(OFF_TYPE_OF_LOADER),
        "loadflags": u8(OFF_LOADFLAGS),
        "setup_data": u64(OFF_SETUP_DATA),
        "hardware_subarch": u32(OFF_HARDWARE_SUBARCH),
        "version": u16(0x206),
        "header": bytes(buf[0x202:0x206]),
        "sentinel": u8(OFF_SENTINEL),
        "e820_entries": u8(OFF_E820_ENTRIES),
        "e820": [tuple(e) for e in e820],
        "efi_info": {
            "loader_signature": efi[0], "systab": efi[1] | (efi[6] << 32),
            "memdesc_size": efi[2], "memdesc_version": efi[3],
            "memmap": efi[4] | (efi[7] << 32), "memmap_size": efi[5],
        },
        "secure_boot": u8(OFF_SECURE_BOOT),
    }
