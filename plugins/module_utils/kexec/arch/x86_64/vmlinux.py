# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""x86_64 ELF vmlinux: load each PT_LOAD at its physical address, enter at startup_64.

An uncompressed vmlinux (from a build tree, a debug package, or extract_vmlinux() on a bzImage)
has no setup header, so we synthesise one describing what we actually pass: protocol 2.15 fields
(cmdline, initrd and boot_params may sit above 4 GiB, the ACPI RSDP is given), then build the same
zero page a bzImage gets.  The kernel is not relocated: its PT_LOADs go exactly where p_paddr
says (the link-time physical address, 16 MiB on Debian), and entry is e_entry, which x86's
linker script sets to the physical address of startup_64.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...errors import ImageFormatError
from ...core import elf as _elf
from ...core.entropy import kernel_random
from .bzimage import (DAMAGED, BOOT_FLAG, HDRS_MAGIC, LOADED_HIGH, PAGE_SIZE, XLF_CAN_BE_LOADED_ABOVE_4G,
                      XLF_KERNEL_64, BootData, SetupHeader)

EM_X86_64 = 62
COMMAND_LINE_SIZE = 2048        # x86's COMMAND_LINE_SIZE; cmdline_size excludes the NUL
SYNTH_VERSION = 0x020F
SYNTH_HEADER_END = 0x26C        # up to and including kernel_info_offset (2.15)


def synthesize_header(kernel_alignment=0x200000, init_size=0):
    """A SetupHeader for a kernel that brought none (ELF vmlinux), as raw bytes from 0x1f1."""
    raw = bytearray(SYNTH_HEADER_END)
    struct.pack_into("<H", raw, 0x1FA, 0xFFFF)                    # vid_mode: "normal"
    struct.pack_into("<H", raw, 0x1FE, BOOT_FLAG)
    raw[0x200] = 0xEB                                             # short jmp over the header;
    raw[0x201] = SYNTH_HEADER_END - 0x202                         # its target marks the end
    raw[0x202:0x206] = HDRS_MAGIC
    struct.pack_into("<H", raw, 0x206, SYNTH_VERSION)
    raw[0x211] = LOADED_HIGH
    struct.pack_into("<I", raw, 0x22C, 0x7FFFFFFF)                 # initrd_addr_max
    struct.pack_into("<I", raw, 0x230, kernel_alignment)
    struct.pack_into("<H", raw, 0x236, XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G)
    struct.pack_into("<I", raw, 0x238, COMMAND_LINE_SIZE - 1)
    struct.pack_into("<I", raw, 0x260, init_size & 0xFFFFFFFF)
    return SetupHeader.parse(bytes(raw))


class Vmlinux:
    """A parsed x86_64 ELF vmlinux over the caller's buffer."""

    name = "vmlinux"

    def __init__(self, buf, elf):
        self.buf = buf
        self.elf = elf

    @staticmethod
    def probe(buf):
        """True for a 64-bit little-endian x86_64 ET_EXEC ELF (never raises)."""
        try:
            if len(buf) < 20:
                return False
            head = bytes(memoryview(buf)[:20])
        except (TypeError, ValueError):
            return False
        return (head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1
                and struct.unpack_from("<H", head, 16)[0] == _elf.ET_EXEC
                and struct.unpack_from("<H", head, 18)[0] == EM_X86_64)

    @classmethod
    def parse(cls, buf):
        """Parse and validate; ImageFormatError if this is not a loadable x86_64 vmlinux."""
        if len(buf) >= 20 and bytes(memoryview(buf)[:4]) == b"\x7fELF" and not cls.probe(buf):
            # Say what the file is before complaining about its insides.
            head = bytes(memoryview(buf)[:20])
            e_type, e_machine = struct.unpack_from("<HH", head, 16)
            raise ImageFormatError(
                "ELF file is not an x86_64 kernel executable (class %d, data %d, type %d, machine "
                "%d); pass an x86_64 kernel (vmlinuz or vmlinux)" % (head[4], head[5], e_type, e_machine))
        try:
            ef = _elf.ElfFile(buf)
        except ImageFormatError as err:
            raise ImageFormatError("%s%s" % (err, DAMAGED))
        if ef.elfclass != 64 or not ef.little_endian or ef.e_machine != EM_X86_64:
            raise ImageFormatError("ELF file is not an x86_64 kernel (class %d, machine %d); pass an x86_64 kernel"
                                   % (ef.elfclass, ef.e_machine))
        if ef.e_type != _elf.ET_EXEC:
            raise ImageFormatError("ELF file is type %d, not an executable (ET_EXEC); a vmlinux is "
                                   "ET_EXEC: pass the kernel itself, not a module or object" % ef.e_type)
        image = cls(buf, ef)
        loads = image.loads()
        if not loads:
            raise ImageFormatError("ELF vmlinux has no PT_LOAD segment with memory%s" % DAMAGED)
        prev = None
        for ph in sorted(loads, key=lambda p: p.p_paddr):
            if ph.p_paddr % PAGE_SIZE:
                raise ImageFormatError(
                    "PT_LOAD %d has physical address 0x%x, not page aligned; kexec segments must "
                    "start on a page%s" % (ph.index, ph.p_paddr, DAMAGED))
            if ph.p_filesz > ph.p_memsz:
                raise ImageFormatError("PT_LOAD %d has p_filesz 0x%x > p_memsz 0x%x%s"
                                       % (ph.index, ph.p_filesz, ph.p_memsz, DAMAGED))
            if prev is not None and ph.p_paddr < prev.p_paddr + prev.p_memsz:
                raise ImageFormatError("PT_LOAD %d and %d overlap in physical memory%s"
                                       % (prev.index, ph.index, DAMAGED))
            prev = ph
        image.entry()  # validates e_entry
        return image

    def loads(self):
        """PT_LOAD program headers that occupy memory."""
        return [ph for ph in self.elf.segments if ph.p_type == _elf.PT_LOAD and ph.p_memsz > 0]

    def entry(self):
        """Physical entry address (e_entry; translated if the ELF gives a virtual one)."""
        e = self.elf.e_entry
        loads = self.loads()
        for ph in loads:
            if ph.p_paddr <= e < ph.p_paddr + ph.p_memsz:
                return e
        # Only a kernel-half address can be virtual: the per-cpu PT_LOAD has p_vaddr 0, so a low
        # bogus entry would otherwise "translate" into it.
        for ph in loads if e >= 1 << 63 else ():
            if ph.p_vaddr <= e < ph.p_vaddr + ph.p_memsz:
                return e - ph.p_vaddr + ph.p_paddr
        raise ImageFormatError("ELF entry point 0x%x lies in no PT_LOAD segment%s" % (e, DAMAGED))

    def span(self):
        """(lowest physical address, end of the highest PT_LOAD)."""
        loads = self.loads()
        return (min(ph.p_paddr for ph in loads),
                max(ph.p_paddr + ph.p_memsz for ph in loads))

    @classmethod
    def load(cls, buf, initrd, cmdline, host, plan, memory_map=None, efi=None, acpi_rsdp=None,
             boot_params=None, entropy=kernel_random):
        """Add the PT_LOADs, initrd and boot_params to ``plan``; return a LoadedImage."""
        image = cls.parse(buf)
        return image.add_to_plan(initrd, cmdline, host, plan, memory_map=memory_map, efi=efi,
                                 acpi_rsdp=acpi_rsdp, boot_params=boot_params, entropy=entropy)

    def add_to_plan(self, initrd, cmdline, host, plan, memory_map=None, efi=None, acpi_rsdp=None,
                    boot_params=None, entropy=kernel_random):
        """The placement half of load()."""
        lo, hi = self.span()
        align = max([ph.p_align for ph in self.loads()] + [PAGE_SIZE])
        header = synthesize_header(kernel_alignment=min(align, 1 << 31), init_size=hi - lo)
        boot = BootData(header, initrd, cmdline, host, memory_map=memory_map, efi=efi,
                        acpi_rsdp=acpi_rsdp, boot_params=boot_params, entropy=entropy)
        names = []
        for n, ph in enumerate(self.loads()):
            name = "vmlinux.%d" % n
            plan.add_segment_at(name, ph.data(), mem=ph.p_paddr,
                                memsz=(ph.p_memsz + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE)
            names.append(name)
        # The fixed-address kernel segments are in the plan first, so the holes found for
        # boot_params and initrd avoid them.
        boot.reserve(plan)
        boot.add_initrd(plan)
        return boot.finish("vmlinux", self.entry(), lo, hi - lo, names + ["boot_params"])
