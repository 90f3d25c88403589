# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
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

import struct

from ...cmdline import encode_cmdline
from ...errors import HostError, ImageFormatError
from .zeropage import (
    ZERO_PAGE_SIZE, OFF_SCREEN_INFO, SCREEN_INFO_SIZE, OFF_EXT_MEM_K, OFF_ACPI_RSDP_ADDR,
    OFF_EXT_RAMDISK_IMAGE, OFF_EXT_RAMDISK_SIZE, OFF_EXT_CMD_LINE_PTR, OFF_EFI_INFO,
    OFF_ALT_MEM_K, OFF_E820_ENTRIES, OFF_EDDBUF_ENTRIES, OFF_EDD_MBR_SIG_BUF_ENTRIES, OFF_SECURE_BOOT,
    OFF_SENTINEL, OFF_HDR, HDR_END, OFF_EDD_MBR_SIG_BUFFER, EDD_MBR_SIG_BUFFER_SIZE,
    OFF_E820_TABLE, OFF_EDDBUF, EDDBUF_SIZE, OFF_TYPE_OF_LOADER, OFF_LOADFLAGS,
    OFF_RAMDISK_IMAGE, OFF_RAMDISK_SIZE, OFF_HEAP_END_PTR, OFF_CMD_LINE_PTR, OFF_HARDWARE_SUBARCH,
    OFF_SETUP_DATA, E820_MAX_ENTRIES_ZEROPAGE, E820_ENTRY, E820_RAM, E820_RESERVED,
    E820_ACPI, E820_NVS, E820_UNUSABLE, E820_PMEM, E820_PRAM,
    E820_SOFT_RESERVED, SETUP_E820_EXT, SETUP_EFI, SETUP_RNG_SEED, SETUP_DATA_HDR,
    TYPE_OF_LOADER, LOADED_HIGH, EFI_INFO, EFI_MEMDESC, EFI_SETUP_DATA,
    EFI64_SIGNATURE,
)

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
        typ = e820_type(typ)
        if end > _E820_TOP:
            # An e820 entry's size is a u64, so nothing can end at 2**64. No x86 CPU addresses
            # that much (52 bits at most): RAM up there means the map is corrupted; anything else
            # (a firmware reservation recorded to the top) loses its last byte.
            if typ == E820_RAM:
                raise HostError("the memory map lists RAM at %#x-%#x, beyond any x86_64 physical address; "
                                "the host's memory map is corrupted (re-read /proc/iomem or record it again)"
                                % (start, end - 1))
            end = _E820_TOP
        out.append((start, end - start, typ))
    out.sort()
    return out


#: The exclusive end of the highest range an e820 entry (u64 address, u64 size) can describe.
_E820_TOP = (1 << 64) - 1


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
        """Collect the context from a host.Host value; explicit arguments win.

        ``efi`` is the host's EfiState (efi.state_for reads it), None for a host that did not
        boot through EFI: the builder never reads files itself.
        """
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
        if efi is not None and not efi.usable:
            warnings.append(
                "EFI is not passed to the new kernel (%s): it will boot without EFI runtime "
                "services and find ACPI through acpi_rsdp_addr" % efi.problem)
            if not acpi_rsdp:
                warnings.append("the ACPI RSDP address is unknown too: the new kernel may find no "
                                "ACPI tables on an EFI-only machine")
        return cls(e820, boot_params, acpi_rsdp, efi, warnings)


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
    """Sizes and offsets of the boot_params segment, known before its address is.

    ``rng_seed`` (bytes or None) becomes a SETUP_RNG_SEED record, which the next kernel mixes
    into its RNG and credits at once (add_bootloader_randomness), so nothing in its early boot
    waits for entropy.
    """

    def __init__(self, cmdline, ctx, rng_seed=None):
        self.cmdline = bytes(cmdline)
        self.ctx = ctx
        self.rng_seed = bytes(rng_seed) if rng_seed else None
        off = ZERO_PAGE_SIZE
        self.cmdline_offset = off
        off = _align16(off + len(self.cmdline) + 1)
        self.e820_zero = ctx.e820[:E820_MAX_ENTRIES_ZEROPAGE]
        self.e820_ext = ctx.e820[E820_MAX_ENTRIES_ZEROPAGE:]
        self.e820_ext_offset = None
        if self.e820_ext:
            self.e820_ext_offset = off
            off = _align16(off + SETUP_DATA_HDR.size + E820_ENTRY.size * len(self.e820_ext))
        self.rng_seed_offset = None
        if self.rng_seed:
            self.rng_seed_offset = off
            off = _align16(off + SETUP_DATA_HDR.size + len(self.rng_seed))
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
        if self.rng_seed:
            off = self.rng_seed_offset
            SETUP_DATA_HDR.pack_into(buf, off, setup_data_head, SETUP_RNG_SEED, len(self.rng_seed))
            start = off + SETUP_DATA_HDR.size
            buf[start:start + len(self.rng_seed)] = self.rng_seed
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


def build_boot_params(header, memory_map, addr, cmdline, initrd_addr=0, initrd_size=0,
                      boot_params=None, acpi_rsdp=None, efi=None, rng_seed=None):
    """The whole boot_params segment (zero page, cmdline, setup_data) for placement at ``addr``.

    ``memory_map`` is what the new kernel will believe about memory: the host's firmware map
    for a normal kexec, a crash-specific map for a crash kernel.  Returns BuiltBootParams.
    """
    ctx = BootParamsContext(e820_entries(memory_map), boot_params, acpi_rsdp, efi)
    layout = BootParamsLayout(encode_cmdline(cmdline), ctx, rng_seed)
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
