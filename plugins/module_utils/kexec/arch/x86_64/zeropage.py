# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Layout of the x86 zero page (struct boot_params, Documentation/arch/x86/zero-page.rst) and of
the setup_data records chained from it: offsets and structs only, shared by the builder
(bootparams.py) and the EFI state reader (efi.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

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

# setup_data types (arch/x86/include/uapi/asm/bootparam.h)
SETUP_E820_EXT = 1
SETUP_EFI = 4
SETUP_RNG_SEED = 9
#: Bytes of the seed the kernel's own kexec_file loader passes (RNG_SEED_LENGTH).
RNG_SEED_LENGTH = 32
SETUP_DATA_HDR = struct.Struct("<QII")  # next, type, len

# boot.rst: type_of_loader 0xFF means "undefined"; we have no assigned loader ID and must not
# claim kexec-tools' (0xD).
TYPE_OF_LOADER = 0xFF
LOADED_HIGH = 0x01

EFI_INFO = struct.Struct("<4sIIIIIII")  # signature systab memdesc_size memdesc_version memmap memmap_size systab_hi memmap_hi
EFI_MEMDESC = struct.Struct("<IIQQQQ")  # type pad phys virt num_pages attribute
EFI_SETUP_DATA = struct.Struct("<QQQQ64x")  # fw_vendor runtime(unused since 5.x) tables smbios reserved[8]
EFI64_SIGNATURE = b"EL64"
