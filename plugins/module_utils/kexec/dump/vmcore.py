# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a crashed kernel's memory from an ELF64 core (``/proc/vmcore``) and its kernel log.

The capture kernel exposes the crashed kernel's RAM as an ELF core: PT_LOAD segments map physical
addresses to file offsets, and a PT_NOTE carries the VMCOREINFO note, ``KEY=VALUE`` lines in which
the crashed kernel published the addresses, offsets and sizes a reader needs (``SYMBOL(prb)``,
``OFFSET(prb_desc.state_var)``...).  Reading the log therefore needs no debug symbols: only the
note, a virtual-to-physical translation (the kernel image mapping or a page-table walk) and the
printk ringbuffer layout, described by the note itself.

Little-endian ELF64 cores of the architectures the loader knows are read (x86_64, aarch64,
ppc64le); anything else is refused with a ``VmcoreError``.  How a kernel virtual address becomes
a physical one is the architecture's (``arch/<arch>/pagewalk.py``).
Every malformed input (truncated file, absurd sizes, unmapped address, inconsistent ringbuffer)
raises ``VmcoreError`` too: callers never see ``struct.error`` or ``IndexError``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import os
import struct

from ..core import elf as _elf
from ..errors import ImageFormatError, KexecError


class VmcoreError(KexecError):
    """The crash dump cannot be read: wrong format, truncated, or lacking what the reader needs."""


_M64 = (1 << 64) - 1
#: Machines whose cores we read (little-endian ELF64).
MACHINES = {_elf.EM_X86_64: "x86_64", _elf.EM_AARCH64: "aarch64", _elf.EM_PPC64: "ppc64le"}
_ET_CORE = 4
_PT_LOAD = 1
_PT_NOTE = 4
_MAX_NOTE_BYTES = 16 << 20   # real note segments are a few KiB per CPU; more means corruption

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_U64 = struct.Struct("<Q")


class KernelMemory:
    """Reads of a crashed kernel's virtual memory through an architecture's ``vtop()``, a page at
    a time (consecutive virtual pages need not be consecutive physical ones); subclasses set
    ``core`` (an ElfCore), ``page_size`` and ``vtop``."""

    core = None
    page_size = 4096

    def vtop(self, vaddr):
        raise NotImplementedError

    def read(self, vaddr, size):
        """``size`` bytes at kernel virtual address ``vaddr``."""
        parts = []
        while size > 0:
            take = min(size, self.page_size - (vaddr % self.page_size))
            parts.append(self.core.read_phys(self.vtop(vaddr), take))
            vaddr += take
            size -= take
        return b"".join(parts)

    def u64(self, vaddr):
        """An unsigned 64-bit value (a pointer or an unsigned long) at ``vaddr``."""
        return _U64.unpack(self.read(vaddr, 8))[0]

    def u32(self, vaddr):
        """An unsigned 32-bit value at ``vaddr``."""
        return struct.unpack("<I", self.read(vaddr, 4))[0]


def parse_vmcoreinfo(text):
    """``KEY=VALUE`` lines (str or bytes) -> dict of str; lines without ``=`` are ignored."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    entries = {}
    for line in text.split("\0", 1)[0].splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            entries[key.strip()] = value.strip()
    return entries


class VmcoreInfo:
    """Typed access to VMCOREINFO entries; a missing or malformed key raises VmcoreError."""

    def __init__(self, entries):
        self.entries = dict(entries)

    def has(self, key):
        """True when the note has ``key`` (e.g. ``"SYMBOL(prb)"``)."""
        return key in self.entries

    def missing(self, keys):
        """The keys of ``keys`` the note lacks, in order."""
        return [k for k in keys if k not in self.entries]

    def require(self, keys, what):
        """Raise one VmcoreError naming every key of ``keys`` the note lacks (needed for ``what``)."""
        absent = self.missing(keys)
        if absent:
            raise VmcoreError("cannot read %s: the crashed kernel's VMCOREINFO lacks %s"
                              % (what, ", ".join(absent)))

    def _value(self, key, base):
        if key not in self.entries:
            raise VmcoreError("the crashed kernel's VMCOREINFO lacks %s" % key)
        try:
            return int(self.entries[key], base)
        except ValueError:
            raise VmcoreError("VMCOREINFO %s=%r is not a number" % (key, self.entries[key]))

    def symbol(self, name):
        """Address of a kernel symbol (hexadecimal in the note)."""
        return self._value("SYMBOL(%s)" % name, 16)

    def offset(self, struct_name, member):
        """Byte offset of ``member`` in ``struct_name``."""
        return self._value("OFFSET(%s.%s)" % (struct_name, member), 10)

    def size(self, name):
        """sizeof a kernel type."""
        return self._value("SIZE(%s)" % name, 10)

    def number(self, name, default=None):
        """A NUMBER(name) entry (signed decimal); ``default`` when absent and a default is given."""
        key = "NUMBER(%s)" % name
        if default is not None and key not in self.entries:
            return default
        return self._value(key, 10)

    def length(self, name):
        """A LENGTH(name) entry (element count of an array)."""
        return self._value("LENGTH(%s)" % name, 10)

    def kernel_offset(self):
        """The KASLR slide of the kernel image (KERNELOFFSET, hexadecimal), 0 when absent."""
        return self._value("KERNELOFFSET", 16) if "KERNELOFFSET" in self.entries else 0


class ElfCore:
    """An ELF64 little-endian core file: physical memory by PT_LOAD, notes by PT_NOTE.

    Reads with ``os.pread``: the file is usually /proc/vmcore (gigabytes), never loaded whole.
    ``touched`` collects the physical page numbers read, to cut small regression fixtures.
    """

    def __init__(self, path):
        self.path = path
        self.touched = set()
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            raise VmcoreError("cannot open %s: %s" % (path, err.strerror or err))
        try:
            self.size = os.fstat(self._fd).st_size
            self._parse()
        except BaseException:
            os.close(self._fd)
            raise

    def close(self):
        """Close the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _pread(self, offset, size, what):
        parts = []
        got = 0
        while got < size:
            try:
                chunk = os.pread(self._fd, size - got, offset + got)
            except OSError as err:
                raise VmcoreError("%s: reading %s at offset %#x failed: %s" % (self.path, what, offset, err.strerror))
            if not chunk:
                raise VmcoreError("%s is truncated: %s at offset %#x needs %d bytes, the file ends after %d"
                                  % (self.path, what, offset, size, got))
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _parse(self):
        ident = self._pread(0, 16, "the ELF identification") if self.size >= 16 else b""
        if ident[:4] != b"\x7fELF":
            raise VmcoreError("%s is not an ELF core file (no \\x7fELF magic)" % self.path)
        if ident[4] != 2 or ident[5] != 1:
            raise VmcoreError("%s is a %s %s-endian ELF file; only ELF64 little-endian cores are read"
                              % (self.path, "64-bit" if ident[4] == 2 else "32-bit", "little" if ident[5] == 1 else "big"))
        (_ident, e_type, e_machine, _ver, _entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize, e_phnum,
         _shentsize, _shnum, _shstrndx) = _EHDR.unpack(self._pread(0, _EHDR.size, "the ELF header"))
        if e_type != _ET_CORE:
            raise VmcoreError("%s is an ELF file of type %d, not a core file (type 4)" % (self.path, e_type))
        if e_machine not in MACHINES:
            raise VmcoreError("%s is a core of ELF machine %d; only %s cores are read"
                              % (self.path, e_machine, ", ".join(sorted(MACHINES.values()))))
        self.machine = e_machine
        if e_phentsize != _PHDR.size or e_phnum == 0 or e_phnum == 0xffff:
            raise VmcoreError("%s has an unusable program header table (entry size %d, count %d)"
                              % (self.path, e_phentsize, e_phnum))
        table = self._pread(e_phoff, e_phnum * _PHDR.size, "the program headers")
        loads = []
        self.notes = []
        for i in range(e_phnum):
            p_type, _pflags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _align = _PHDR.unpack_from(table, i * _PHDR.size)
            if p_type == _PT_LOAD:
                if p_offset + p_filesz > self.size:
                    raise VmcoreError("%s is truncated: PT_LOAD %d (physical %#x) ends at offset %#x, the file has %d bytes"
                                      % (self.path, i, p_paddr, p_offset + p_filesz, self.size))
                if p_memsz and p_paddr != _M64:
                    loads.append((p_paddr, p_offset, p_filesz, max(p_memsz, p_filesz), p_vaddr))
            elif p_type == _PT_NOTE:
                if p_filesz > _MAX_NOTE_BYTES:
                    raise VmcoreError("%s: PT_NOTE %d claims %d bytes; the file is corrupt" % (self.path, i, p_filesz))
                data = self._pread(p_offset, p_filesz, "PT_NOTE %d" % i)
                try:
                    self.notes.extend(_elf.iter_notes(data, True))
                except ImageFormatError as err:
                    raise VmcoreError("%s: PT_NOTE %d is corrupt: %s" % (self.path, i, err))
        loads.sort()
        self.loads = loads
        self._starts = [seg[0] for seg in loads]

    def vmcoreinfo(self):
        """The VMCOREINFO note as a VmcoreInfo (VmcoreError when the core has none)."""
        for name, _ntype, desc in self.notes:
            if name == "VMCOREINFO":
                return VmcoreInfo(parse_vmcoreinfo(desc))
        raise VmcoreError("%s has no VMCOREINFO note: the crashed kernel did not publish where its data is" % self.path)

    def read_phys(self, paddr, size):
        """``size`` bytes of the crashed kernel's physical memory at ``paddr``."""
        parts = []
        while size > 0:
            i = bisect.bisect_right(self._starts, paddr) - 1
            seg = self.loads[i] if i >= 0 else None
            if seg is None or paddr >= seg[0] + seg[3]:
                raise VmcoreError("physical address %#x is not in the dump %s" % (paddr, self.path))
            start, offset, filesz, memsz = seg[:4]
            within = paddr - start
            take = min(size, memsz - within)
            from_file = max(0, min(take, filesz - within))
            if from_file:
                parts.append(self._pread(offset + within, from_file, "physical memory %#x" % paddr))
            if take > from_file:
                parts.append(bytes(take - from_file))  # memsz beyond filesz reads as zeros, like ELF says
            for page in range(paddr >> 12, ((paddr + take - 1) >> 12) + 1):
                self.touched.add(page)
            paddr += take
            size -= take
        return b"".join(parts)
