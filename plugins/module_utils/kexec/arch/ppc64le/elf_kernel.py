# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ppc64 ELF kernels (``vmlinux``, what Debian installs as ``/boot/vmlinux-*-powerpc64le``).

An ELF64 little-endian ELFv2 executable of machine EM_PPC64 with one PT_LOAD linked at physical
0 (virtual 0xc000000000000000, the entry).  A ppc64 kernel runs from wherever a loader puts it:
its first instructions find their own address, and unless told otherwise it copies itself down
to 0 (__after_prom_start), so the loaders (the kernel's kexec_elf_load(), kexec-tools) place
the PT_LOAD in any free RAM instead of at its physical address, which the running kernel
occupies.  What the image itself says:

- **relocatable**: a CONFIG_RELOCATABLE kernel carries the dynamic relocations it applies to
  itself (``.rela.dyn`` behind a DT_RELA entry of its dynamic section; relocate() in
  reloc_64.S), and only such a kernel can *run* at an address other than its link address;
- **"run0" at 0x5c** (``__run_at_load``, head_64.S, only in relocatable kernels): a loader that
  writes 1 there makes the kernel run where it was loaded (a capture kernel must, the memory at
  0 is the evidence); any other value makes it copy itself to 0;
- the first 0x100 bytes: the secondary CPUs run their copy at address 0 (see purgatory.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...core import elf as _elf
from ...core.memmap import align_up
from ...errors import ImageFormatError

#: Offset and default contents of __run_at_load (arch/powerpc/kernel/head_64.S).
RUN_AT_LOAD_OFFSET = 0x5C
RUN_AT_LOAD_MAGIC = 0x72756E30  # "run0": relocate to 0 unless a loader says otherwise
#: Bytes kexec_sequence copies from the entry point to address 0 for the secondary CPUs.
HEAD_SIZE = 0x100
#: The kernel's virtual base (PAGE_OFFSET / KERNELBASE of Book3S-64).
KERNELBASE = 0xC000000000000000
#: What ends a kernel image signed the way ppc64's kexec_file_load verifies (sign-file's trailer).
SIGNATURE_MARKER = b"~Module signature appended~\n"
DT_NULL = 0
DT_RELA = 7
DT_RELASZ = 8
_DAMAGED = "; the file is truncated or is not a kernel: pass /boot/vmlinux-<version> as installed"


class Ppc64Kernel:
    """A parsed ppc64 ELF kernel over the caller's buffer (never copied)."""

    name = "elf-ppc64"

    def __init__(self, buf, elf, load):
        self.buf = buf
        self.elf = elf
        self.load_header = load

    @staticmethod
    def signed(buf):
        """True when the file ends with an appended signature (the module-signature format the
        powerpc kexec_file_load checks under secure boot, arch_kexec_kernel_verify_sig())."""
        tail = bytes(memoryview(buf)[-len(SIGNATURE_MARKER):]) if len(buf) >= len(SIGNATURE_MARKER) else b""
        return tail == SIGNATURE_MARKER

    @staticmethod
    def probe(buf):
        """True for a 64-bit little-endian EM_PPC64 executable (never raises)."""
        try:
            head = bytes(memoryview(buf)[:20])
        except (TypeError, ValueError):
            return False
        return (len(head) == 20 and head[:4] == _elf.ELFMAG and head[4] == 2 and head[5] == 1
                and struct.unpack_from("<H", head, 16)[0] in (_elf.ET_EXEC, _elf.ET_DYN)
                and struct.unpack_from("<H", head, 18)[0] == _elf.EM_PPC64)

    @classmethod
    def parse(cls, buf):
        """Parse and validate; ImageFormatError saying what is wrong otherwise."""
        if not cls.probe(buf):
            raise ImageFormatError("not a little-endian 64-bit PowerPC ELF kernel; pass the kernel the distribution "
                                   "installs as /boot/vmlinux-<version> (ppc64le loads ELF vmlinux files)")
        try:
            ef = _elf.ElfFile(buf)
        except ImageFormatError as err:
            raise ImageFormatError("%s%s" % (err, _DAMAGED))
        if ef.e_flags & 3 == 1:
            raise ImageFormatError("the kernel is an ELFv1 (big-endian ABI) build; this loader boots little-endian "
                                   "ELFv2 ppc64le kernels")
        loads = [ph for ph in ef.segments if ph.p_type == _elf.PT_LOAD and ph.p_memsz > 0]
        if not loads:
            raise ImageFormatError("the kernel has no PT_LOAD segment%s" % _DAMAGED)
        if len(loads) > 1:
            # The kernel's kexec_elf_load() and kexec-tools place each PT_LOAD on its own, which only
            # works for the one-segment images the ppc64 linker script produces.
            raise ImageFormatError("the kernel has %d PT_LOAD segments; ppc64 kernels have one (vmlinux.lds), and "
                                   "loaders move it as a whole: pass a kernel built by the kernel's own build"
                                   % len(loads))
        load = loads[0]
        if load.p_filesz > load.p_memsz:
            raise ImageFormatError("PT_LOAD has p_filesz %#x > p_memsz %#x%s" % (load.p_filesz, load.p_memsz, _DAMAGED))
        if load.p_filesz < HEAD_SIZE:
            raise ImageFormatError("PT_LOAD holds %d bytes, less than the %d-byte head every ppc64 kernel starts "
                                   "with%s" % (load.p_filesz, HEAD_SIZE, _DAMAGED))
        image = cls(buf, ef, load)
        image.entry_offset()  # validates e_entry
        return image

    # -- what the image says ---------------------------------------------------------------------

    def entry_offset(self):
        """Bytes from the start of the PT_LOAD to the entry point (0 for every real kernel)."""
        ph, entry = self.load_header, self.elf.e_entry
        for base in (ph.p_vaddr, ph.p_paddr):
            if base <= entry < base + ph.p_memsz:
                return entry - base
        raise ImageFormatError("ELF entry point %#x lies outside the PT_LOAD (%#x+%#x)%s"
                               % (entry, ph.p_vaddr, ph.p_memsz, _DAMAGED))

    def data(self):
        """The PT_LOAD's file bytes (a view into the caller's buffer)."""
        return self.load_header.data()

    @property
    def memsz(self):
        return self.load_header.p_memsz

    def align(self, page_size):
        """Alignment of the load address: the PT_LOAD's own, at least a page (kexec_elf_load())."""
        return max(self.load_header.p_align or 1, page_size)

    def head(self):
        """The first HEAD_SIZE bytes of the image, as it will be loaded."""
        return bytes(self.data()[:HEAD_SIZE])

    def run_at_load_word(self):
        """The 32-bit word at RUN_AT_LOAD_OFFSET."""
        return struct.unpack_from("<I", self.head(), RUN_AT_LOAD_OFFSET)[0]

    @property
    def has_run_at_load(self):
        """True when the image carries the "run0" magic: a loader may tell it to stay put."""
        return self.run_at_load_word() == RUN_AT_LOAD_MAGIC

    @property
    def relocatable(self):
        """True when the kernel can run at another address than it was linked for."""
        if self.elf.e_type == _elf.ET_DYN or self._has_dynamic_relocations():
            return True
        # Stripped of its section table: __run_at_load exists only in relocatable kernels.
        return not any(s.sh_type != _elf.SHT_NULL for s in self.elf.sections) and self.has_run_at_load

    def _has_dynamic_relocations(self):
        tables = [s.data() for s in self.elf.sections if s.sh_type == _elf.SHT_DYNAMIC]
        tables += [ph.data() for ph in self.elf.segments if ph.p_type == _elf.PT_DYNAMIC]
        for data in tables:
            entries = {}
            for at in range(0, len(data) - 15, 16):
                tag, value = struct.unpack_from("<qQ", data, at)
                if tag == DT_NULL:
                    break
                entries.setdefault(tag, value)
            if entries.get(DT_RELA) is not None and entries.get(DT_RELASZ):
                return True
        return False

    def crash_refusal(self):
        """Why this kernel cannot be a capture kernel in a crash region (a sentence), or None."""
        if not self.relocatable:
            return ("the kernel is not relocatable (built without CONFIG_RELOCATABLE: it has no dynamic "
                    "relocations), so it can only run at physical address 0, where the crashed kernel's memory "
                    "is; load a relocatable kernel as the crash kernel (Debian's are)")
        if not self.has_run_at_load:
            return ("the kernel has no __run_at_load word (\"run0\" at offset %#x holds %#010x), so the loader cannot "
                    "tell it to run at the address it is loaded at in the crash region and it would copy itself "
                    "to 0 over the crashed kernel's memory; load a kernel built with CONFIG_RELOCATABLE"
                    % (RUN_AT_LOAD_OFFSET, self.run_at_load_word()))
        return None

    def segment_memsz(self, page_size):
        return align_up(self.memsz, page_size)

    def to_dict(self):
        return {"format": self.name, "memsz": self.memsz, "entry_offset": self.entry_offset(),
                "relocatable": self.relocatable, "run_at_load": self.run_at_load_word(),
                "p_align": self.load_header.p_align}


def patched_head(head, run_at_load):
    """``head`` with the __run_at_load word set to ``run_at_load`` (None: unchanged)."""
    if run_at_load is None:
        return bytes(head)
    out = bytearray(head)
    struct.pack_into("<I", out, RUN_AT_LOAD_OFFSET, run_at_load)
    return bytes(out)
