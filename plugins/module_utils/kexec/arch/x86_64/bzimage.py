# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""x86 bzImage: the setup header, and loading through the 64-bit boot protocol.

A bzImage is a real-mode setup program ((setup_sects + 1) * 512 bytes, holding the *setup header*
at 0x1f1) followed by the protected-mode kernel, which is a small self-decompressor plus the
compressed vmlinux (the *payload*).  We never run the real-mode part: kexec enters the kernel at its
64-bit entry point (protected-mode start + 0x200) with %rsi pointing at a zero page (boot_params)
that we fill ourselves, exactly as Documentation/arch/x86/boot.rst describes for the 64-bit boot
protocol.  Only 64-bit-entry capable kernels (XLF_KERNEL_64, protocol >= 2.12) are loaded.

Placement follows the kernel's own kexec_file loader: boot_params + cmdline from 0x3000 up, the
kernel from 1 MiB up aligned to kernel_alignment with room for init_size, the initrd from 16 MiB up,
each as high as possible.  Large buffers stay memoryviews over the caller's mapping.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...cmdline import encode_cmdline
from ...errors import ImageFormatError, PlanError
from ...core.decompress import decompress, detect
from ...core import pe
from ...core.entropy import kernel_random
from . import bootparams as _bp
from . import efi as _efi
from .zeropage import RNG_SEED_LENGTH

SETUP_HEADER_OFFSET = 0x1F1
HDRS_MAGIC = b"HdrS"
BOOT_FLAG = 0xAA55
SECTOR = 512

# loadflags
LOADED_HIGH = 0x01
KASLR_FLAG = 0x02
QUIET_FLAG = 0x20
KEEP_SEGMENTS = 0x40
CAN_USE_HEAP = 0x80

# xloadflags
XLF_KERNEL_64 = 0x01
XLF_CAN_BE_LOADED_ABOVE_4G = 0x02
XLF_EFI_HANDOVER_32 = 0x04
XLF_EFI_HANDOVER_64 = 0x08
XLF_EFI_KEXEC = 0x10
XLF_5LEVEL = 0x20
XLF_5LEVEL_ENABLED = 0x40

#: What a damaged or foreign kernel file's refusal tells the user to do.
DAMAGED = ("; the kernel file is damaged or not an x86 kernel: reinstall its package "
           "(apt-get install --reinstall linux-image-<version>) or pass an intact one")

# 2.12 is the first protocol with xloadflags, i.e. the first that can say "I have a 64-bit entry".
MIN_PROTOCOL = 0x020C

# The 64-bit entry point sits 0x200 bytes into the protected-mode kernel (boot.rst, "64-bit BOOT
# PROTOCOL"); startup_32 is at offset 0.
ENTRY64_OFFSET = 0x200

# Lower bounds of the placement windows; the same numbers kexec-tools and the kernel's kexec_file
# loader use, so a plan we make is one they would also make.
MIN_BOOTPARAM_ADDR = 0x3000
MIN_KERNEL_LOAD_ADDR = 0x100000
MIN_INITRD_LOAD_ADDR = 0x1000000
FOUR_GIB = 1 << 32
PAGE_SIZE = 4096

# (name, offset in the image, struct format, first protocol version that defines it).
# Offsets are absolute in the file (and in the zero page): boot.rst lists them that way.
_FIELDS = (
    ("setup_sects", 0x1F1, "B", 0),
    ("root_flags", 0x1F2, "H", 0),
    ("syssize", 0x1F4, "I", 0x0204),
    ("ram_size", 0x1F8, "H", 0),
    ("vid_mode", 0x1FA, "H", 0),
    ("root_dev", 0x1FC, "H", 0),
    ("boot_flag", 0x1FE, "H", 0),
    ("jump", 0x200, "H", 0x0200),
    ("header", 0x202, "4s", 0x0200),
    ("version", 0x206, "H", 0x0200),
    ("realmode_swtch", 0x208, "I", 0x0200),
    ("start_sys_seg", 0x20C, "H", 0x0200),
    ("kernel_version", 0x20E, "H", 0x0200),
    ("type_of_loader", 0x210, "B", 0x0200),
    ("loadflags", 0x211, "B", 0x0200),
    ("setup_move_size", 0x212, "H", 0x0200),
    ("code32_start", 0x214, "I", 0x0200),
    ("ramdisk_image", 0x218, "I", 0x0200),
    ("ramdisk_size", 0x21C, "I", 0x0200),
    ("bootsect_kludge", 0x220, "I", 0x0200),
    ("heap_end_ptr", 0x224, "H", 0x0201),
    ("ext_loader_ver", 0x226, "B", 0x0202),
    ("ext_loader_type", 0x227, "B", 0x0202),
    ("cmd_line_ptr", 0x228, "I", 0x0202),
    ("initrd_addr_max", 0x22C, "I", 0x0203),
    ("kernel_alignment", 0x230, "I", 0x0205),
    ("relocatable_kernel", 0x234, "B", 0x0205),
    ("min_alignment", 0x235, "B", 0x020A),
    ("xloadflags", 0x236, "H", 0x020C),
    ("cmdline_size", 0x238, "I", 0x0206),
    ("hardware_subarch", 0x23C, "I", 0x0207),
    ("hardware_subarch_data", 0x240, "Q", 0x0207),
    ("payload_offset", 0x248, "I", 0x0208),
    ("payload_length", 0x24C, "I", 0x0208),
    ("setup_data", 0x250, "Q", 0x0209),
    ("pref_address", 0x258, "Q", 0x020A),
    ("init_size", 0x260, "I", 0x020A),
    ("handover_offset", 0x264, "I", 0x020B),
    ("kernel_info_offset", 0x268, "I", 0x020F),
)
FIELD_NAMES = tuple(f[0] for f in _FIELDS)
# The setup header ends where edd_mbr_sig_buffer begins in struct boot_params.
SETUP_HEADER_END_MAX = 0x290


def _u8(buf, off):
    return buf[off] if off < len(buf) else 0


class SetupHeader:
    """The x86 setup header as a plain value (field names as in boot.rst).

    ``raw`` holds the header bytes exactly as the image has them (0x1f1 up to the end the image
    declares with the byte at 0x201), because boot.rst asks a 64-bit loader to copy the header
    into the zero page verbatim and only then patch the fields it owns.
    """

    __slots__ = FIELD_NAMES + ("raw", "header_end")

    def __init__(self, raw, header_end, **fields):
        self.raw = bytes(raw)
        self.header_end = header_end
        for name in FIELD_NAMES:
            setattr(self, name, fields.get(name, 0))

    @classmethod
    def parse(cls, buf):
        """Parse the header of ``buf`` (bytes, memoryview or mmap); ImageFormatError if absent."""
        view = memoryview(buf)
        try:
            return cls._parse(view)
        finally:
            view.release()

    @classmethod
    def _parse(cls, view):
        size = len(view)
        if size < 0x208:
            raise ImageFormatError(
                "file is %d bytes, too short to hold an x86 setup header (needs at least 0x208): "
                "not a bzImage, or truncated%s" % (size, DAMAGED))
        magic = bytes(view[0x202:0x206])
        if magic != HDRS_MAGIC:
            raise ImageFormatError(
                "no 'HdrS' magic at offset 0x202 (found %r): not an x86 bzImage%s" % (magic, DAMAGED))
        version = struct.unpack_from("<H", view, 0x206)[0]
        # The short jump at 0x200 (EB xx) skips the header, so 0x202 + xx is where it ends; the
        # kernel and kexec-tools both size the header copy this way.
        header_end = 0x202 + view[0x201]
        header_end = min(header_end, SETUP_HEADER_END_MAX)
        if size < header_end:
            raise ImageFormatError(
                "bzImage truncated inside its setup header (%d bytes, header ends at 0x%x)%s"
                % (size, header_end, DAMAGED))
        fields = {}
        for name, off, fmt, since in _FIELDS:
            width = struct.calcsize("<" + fmt)
            if version < since or off + width > header_end:
                continue  # older protocol: the field does not exist, leave it 0
            fields[name] = struct.unpack_from("<" + fmt, view, off)[0]
        return cls(view[SETUP_HEADER_OFFSET:header_end], header_end, **fields)

    @property
    def setup_sects_effective(self):
        """setup_sects with the historical rule applied: 0 means 4."""
        return self.setup_sects or 4

    @property
    def setup_size(self):
        """Bytes of real-mode code before the protected-mode kernel: (setup_sects + 1) * 512."""
        return (self.setup_sects_effective + 1) * SECTOR

    @property
    def protocol(self):
        """Boot protocol as 'major.minor', e.g. '2.15'."""
        return "%d.%02d" % (self.version >> 8, self.version & 0xFF)

    def has(self, xlf):
        """True if every bit of ``xlf`` is set in xloadflags."""
        return (self.xloadflags & xlf) == xlf

    def to_dict(self):
        """Fields as a JSON-friendly dict (magic as text)."""
        out = {name: getattr(self, name) for name in FIELD_NAMES}
        out["header"] = self.header.decode("latin-1") if self.header else ""
        out["protocol"] = self.protocol
        out["setup_size"] = self.setup_size
        return out

    def __eq__(self, other):
        return isinstance(other, SetupHeader) and self.raw == other.raw

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(self.raw)

    def __repr__(self):
        return "SetupHeader(protocol=%s, setup_sects=%d, xloadflags=0x%x, init_size=0x%x)" % (
            self.protocol, self.setup_sects, self.xloadflags, self.init_size)


class LoadedImage:
    """What a format's load() produced: entry state for purgatory plus where everything went.

    ``regs`` is what purgatory's 64-bit entry must load before jumping: rip = entry64,
    rsi = boot_params address, rbx = 0 (boot.rst: "%rsi must hold the base address of the
    struct boot_params"; rbx = 0 marks the bootstrap processor).
    """

    def __init__(self, fmt, entry64, boot_params_addr=None, kernel_addr=None, kernel_memsz=0,
                 initrd_addr=None, initrd_size=0, cmdline_addr=None, cmdline=b"",
                 header=None, segments=(), warnings=(), efi=False):
        self.format = fmt
        self.entry64 = entry64
        self.boot_params_addr = boot_params_addr
        self.kernel_addr = kernel_addr
        self.kernel_memsz = kernel_memsz
        self.initrd_addr = initrd_addr
        self.initrd_size = initrd_size
        self.cmdline_addr = cmdline_addr
        self.cmdline = bytes(cmdline)
        self.header = header
        self.segments = list(segments)
        self.warnings = list(warnings)
        self.efi = efi

    @property
    def regs(self):
        """Register values for purgatory's entry64_regs."""
        regs = {"rip": self.entry64, "rbx": 0}
        if self.boot_params_addr is not None:
            regs["rsi"] = self.boot_params_addr
        return regs

    def to_dict(self):
        """JSON-friendly view (addresses as ints, cmdline as text)."""
        return {
            "format": self.format,
            "entry64": self.entry64,
            "boot_params_addr": self.boot_params_addr,
            "kernel_addr": self.kernel_addr,
            "kernel_memsz": self.kernel_memsz,
            "initrd_addr": self.initrd_addr,
            "initrd_size": self.initrd_size,
            "cmdline_addr": self.cmdline_addr,
            "cmdline": self.cmdline.decode("utf-8", "replace"),
            "header": self.header.to_dict() if self.header is not None else None,
            "segments": list(self.segments),
            "warnings": list(self.warnings),
            "efi": self.efi,
            "regs": self.regs,
        }

    def __eq__(self, other):
        return isinstance(other, LoadedImage) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other

    def __repr__(self):
        return "LoadedImage(%s, entry64=0x%x, boot_params=%s)" % (
            self.format, self.entry64,
            "0x%x" % self.boot_params_addr if self.boot_params_addr is not None else None)


class BzImage:
    """A parsed bzImage over the caller's buffer (never copied)."""

    name = "bzImage"

    def __init__(self, buf, header):
        self.buf = buf
        self.header = header

    # -- recognising --------------------------------------------------------------------------

    @staticmethod
    def probe(buf):
        """True if ``buf`` carries an x86 setup header (HdrS magic and the 0xAA55 boot flag).

        Cheap and never raises: it only decides which format's load() gets to complain.
        """
        try:
            if len(buf) < 0x206:
                return False
            view = memoryview(buf)
            try:
                return (bytes(view[0x202:0x206]) == HDRS_MAGIC
                        and struct.unpack_from("<H", view, 0x1FE)[0] == BOOT_FLAG)
            finally:
                view.release()
        except (TypeError, ValueError):
            return False

    @staticmethod
    def signed(buf):
        """True when the image's EFI stub PE header carries an Authenticode certificate table."""
        return pe.is_signed(buf)

    @classmethod
    def check_file_load(cls, buf, host=None):
        """What kexec_file_load's bzImage64 loader demands beyond check_loadable(): a kernel that may
        be loaded above 4 GiB (bzImage64_probe refuses others)."""
        image = cls.parse(buf)
        image.check_loadable(host)
        if not image.header.has(XLF_CAN_BE_LOADED_ABOVE_4G):
            raise ImageFormatError("this bzImage cannot be loaded above 4 GiB (XLF_CAN_BE_LOADED_ABOVE_4G not set), "
                                   "which kexec_file_load requires; use --method classic for it, nothing was loaded")
        return image

    @classmethod
    def parse(cls, buf):
        """Parse and validate ``buf`` as a bzImage whose layout is internally consistent.

        Checks only what the file itself says (sizes, offsets); whether we can boot it through
        the 64-bit protocol is check_loadable()'s job, so tools can still inspect old images.
        """
        header = SetupHeader.parse(buf)
        size = len(buf)
        if header.boot_flag != BOOT_FLAG:
            raise ImageFormatError("setup header boot_flag is 0x%04x, expected 0xaa55: not a bootable "
                                   "x86 kernel image%s" % (header.boot_flag, DAMAGED))
        if size < 2 * SECTOR:
            raise ImageFormatError("file is %d bytes, too short for a bzImage%s" % (size, DAMAGED))
        if header.setup_size >= size:
            raise ImageFormatError(
                "bzImage truncated: setup_sects=%d says the protected-mode kernel starts at 0x%x, "
                "but the file is only 0x%x bytes%s" % (header.setup_sects, header.setup_size, size, DAMAGED))
        if header.syssize and header.version >= 0x0204:
            # syssize counts 16-byte paragraphs of the protected-mode part.
            declared = header.syssize * 16
            if header.setup_size + declared > size:
                raise ImageFormatError(
                    "bzImage truncated: syssize says 0x%x bytes of kernel follow the setup code at "
                    "0x%x, but the file is only 0x%x bytes%s" % (declared, header.setup_size, size, DAMAGED))
        if header.version >= 0x0208 and header.payload_length:
            start = header.setup_size + header.payload_offset
            if start + header.payload_length > size:
                raise ImageFormatError(
                    "bzImage payload out of range: offset 0x%x + length 0x%x ends past the file "
                    "end 0x%x%s" % (start, header.payload_length, size, DAMAGED))
        return cls(buf, header)

    def check_loadable(self, host=None):
        """Raise ImageFormatError unless this kernel can be entered through the 64-bit protocol."""
        h = self.header
        if h.version < MIN_PROTOCOL:
            raise ImageFormatError(
                "kernel uses x86 boot protocol %s; loading needs 2.12 or newer (a 64-bit entry point "
                "announced by xloadflags), i.e. Linux 3.8 or later; pass a newer kernel" % h.protocol)
        if not h.loadflags & LOADED_HIGH:
            raise ImageFormatError("image is a zImage (LOADED_HIGH not set in loadflags); only "
                                   "bzImage kernels can be loaded: pass a bzImage (make bzImage)")
        if not h.has(XLF_KERNEL_64):
            raise ImageFormatError(
                "kernel has no 64-bit entry point (XLF_KERNEL_64 not set in xloadflags=0x%x): it is a "
                "32-bit kernel or built without 64-bit boot support; pass a 64-bit (x86_64) kernel" % h.xloadflags)
        if not h.relocatable_kernel:
            # Without relocation the kernel must sit at pref_address, which is where the running
            # kernel lives; the planner cannot promise that range, so refuse early and clearly.
            raise ImageFormatError("kernel is not relocatable (relocatable_kernel=0); rebuild with "
                                   "CONFIG_RELOCATABLE=y")
        align = h.kernel_alignment
        if not align or align & (align - 1) or align < PAGE_SIZE:
            raise ImageFormatError("kernel_alignment 0x%x is not a power of two >= 4096%s" % (align, DAMAGED))
        if h.init_size == 0:
            raise ImageFormatError("setup header init_size is 0: corrupted header%s" % DAMAGED)
        if h.init_size < len(self.buf) - h.setup_size:
            raise ImageFormatError(
                "init_size 0x%x is smaller than the protected-mode kernel (0x%x bytes): corrupted "
                "header%s" % (h.init_size, len(self.buf) - h.setup_size, DAMAGED))
        if h.cmdline_size == 0 and h.version >= 0x0206:
            raise ImageFormatError("setup header cmdline_size is 0: corrupted header%s" % DAMAGED)
        if h.version >= 0x0208 and h.payload_length:
            # The payload must start like compressed (or, CONFIG_KERNEL_UNCOMPRESSED, ELF) data;
            # anything else means setup_sects or payload_offset is corrupted and we would jump
            # into garbage.
            payload = self.payload_view()
            try:
                head = bytes(payload[:4])
                known = detect(payload) is not None or head == b"\x7fELF"
            finally:
                payload.release()
            if not known:
                raise ImageFormatError(
                    "the payload at offset 0x%x does not start with compressed kernel data (%s): "
                    "setup_sects or payload_offset is corrupted%s"
                    % (h.setup_size + h.payload_offset, head.hex(), DAMAGED))
        if host is not None and getattr(host, "la57", False) and not h.has(XLF_5LEVEL):
            raise ImageFormatError("the running kernel uses 5-level paging but this kernel cannot be "
                                   "entered in that mode (XLF_5LEVEL not set in its header); use a kernel "
                                   "built with CONFIG_X86_5LEVEL, or boot the running one with no5lvl")

    # -- views --------------------------------------------------------------------------------

    def kernel_view(self):
        """memoryview of the protected-mode kernel (everything after the setup code)."""
        return memoryview(self.buf)[self.header.setup_size:]

    def payload_view(self):
        """memoryview of the compressed vmlinux inside the protected-mode kernel."""
        h = self.header
        if h.version < 0x0208 or not h.payload_length:
            raise ImageFormatError("bzImage (protocol %s) declares no payload; cannot extract vmlinux"
                                   % h.protocol)
        start = h.setup_size + h.payload_offset
        return memoryview(self.buf)[start:start + h.payload_length]

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, buf, initrd, cmdline, host, plan, memory_map=None, efi=None,
             acpi_rsdp=None, boot_params=None, entropy=kernel_random):
        """Add kernel, initrd and boot_params segments to ``plan``; return a LoadedImage.

        ``buf``/``initrd`` are mappings or memoryviews (initrd may be None); ``cmdline`` is the
        final command line (str or bytes; crash callers have already added elfcorehdr=).
        ``memory_map`` is what goes into e820 (default: host.memory_map; a crash kernel passes
        its own).  ``efi``, ``acpi_rsdp`` and ``boot_params`` override what ``host`` says.
        """
        image = cls.parse(buf)
        image.check_loadable(host)
        return image.add_to_plan(initrd, cmdline, host, plan, memory_map=memory_map, efi=efi,
                                 acpi_rsdp=acpi_rsdp, boot_params=boot_params, entropy=entropy)

    def add_to_plan(self, initrd, cmdline, host, plan, memory_map=None, efi=None, acpi_rsdp=None,
                    boot_params=None, entropy=kernel_random):
        """The placement half of load(), on an already parsed and checked image."""
        h = self.header
        boot = BootData(h, initrd, cmdline, host, memory_map=memory_map, efi=efi,
                        acpi_rsdp=acpi_rsdp, boot_params=boot_params, entropy=entropy)
        # boot_params first (as kexec_file does) so it gets the low end of the window before the
        # big buffers; its bytes depend on where everything lands, so reserve now, fill last.
        boot.reserve(plan)
        kernel = self.kernel_view()
        kmemsz = _align_up(max(h.init_size, len(kernel)), PAGE_SIZE)
        k_seg = plan.add_segment("kernel", kernel, memsz=kmemsz, align=h.kernel_alignment,
                                 min_addr=MIN_KERNEL_LOAD_ADDR, max_addr=boot.data_max, top_down=True)
        boot.add_initrd(plan)
        return boot.finish("bzImage", k_seg.mem + ENTRY64_OFFSET, k_seg.mem, kmemsz,
                           ["boot_params", "kernel"])


class BootData:
    """boot_params + cmdline + initrd for one 64-bit-protocol load (shared by bzImage and vmlinux).

    Steps: reserve(plan) places the boot_params segment (its size is known before its content),
    add_initrd(plan) places the initrd, finish() writes boot_params now that every address is
    known and returns the LoadedImage.
    """

    def __init__(self, header, initrd, cmdline, host, memory_map=None, efi=None, acpi_rsdp=None,
                 boot_params=None, entropy=kernel_random):
        self.header = header
        self.cmdline = encode_cmdline(cmdline)
        if header.cmdline_size and len(self.cmdline) > header.cmdline_size:
            raise ImageFormatError(
                "kernel command line is %d bytes but this kernel accepts at most %d (cmdline_size); "
                "shorten it" % (len(self.cmdline), header.cmdline_size))
        self.above_4g = header.has(XLF_CAN_BE_LOADED_ABOVE_4G)
        # Without XLF_CAN_BE_LOADED_ABOVE_4G the kernel reads only the 32-bit pointer fields, so
        # boot_params, cmdline, kernel and initrd must all stay below 4 GiB.
        self.data_max = None if self.above_4g else FOUR_GIB - 1
        self.initrd = initrd if initrd is not None and len(initrd) else None
        if efi is None:
            efi = _efi.state_for(host, boot_params if boot_params is not None else getattr(host, "boot_params", None))
        self.ctx = _bp.BootParamsContext.from_host(host, memory_map=memory_map, efi=efi,
                                                   acpi_rsdp=acpi_rsdp, boot_params=boot_params)
        # entropy(n) -> n fresh bytes or None (core/entropy.py; tests pass a fixed source).
        rng_seed = entropy(RNG_SEED_LENGTH) if entropy is not None else None
        if entropy is not None and rng_seed is None:
            self.ctx.warnings.append("the running kernel's RNG is not initialized yet, so the next kernel gets "
                                     "no RNG seed and may wait for entropy early in its boot")
        self.layout = _bp.BootParamsLayout(self.cmdline, self.ctx, rng_seed)
        self.bp_seg = None
        self.initrd_addr = 0
        self.initrd_size = 0

    def reserve(self, plan):
        """Place the boot_params segment (16-byte aligned is all boot.rst asks; plan pages it)."""
        self.bp_seg = plan.reserve("boot_params", self.layout.size, align=16,
                                   min_addr=MIN_BOOTPARAM_ADDR, max_addr=self.data_max, top_down=True)
        return self.bp_seg

    def add_initrd(self, plan):
        """Place the initrd (if any) high, under initrd_addr_max unless the kernel reads above 4G."""
        if self.initrd is None:
            return None
        h = self.header
        size = len(self.initrd)
        # initrd_addr_max is the highest address the initrd's last byte may occupy; protocols
        # before 2.03 do not state it and boot.rst says to assume 0x37ffffff.
        imax = None if self.above_4g else (h.initrd_addr_max or 0x37FFFFFF)
        seg = plan.add_segment("initrd", memoryview(self.initrd), memsz=size, align=PAGE_SIZE,
                               min_addr=MIN_INITRD_LOAD_ADDR, max_addr=imax, top_down=True)
        self.initrd_addr, self.initrd_size = seg.mem, size
        return seg

    def finish(self, fmt, entry64, kernel_addr, kernel_memsz, segments):
        """Write boot_params into its segment and return the LoadedImage."""
        if self.bp_seg is None:
            raise PlanError("boot_params was never reserved")
        built = self.layout.build(self.header, self.bp_seg.mem, initrd_addr=self.initrd_addr,
                                  initrd_size=self.initrd_size)
        self.bp_seg.set_buffer(built.data)
        segments = list(segments) + (["initrd"] if self.initrd_size else [])
        return LoadedImage(
            fmt, entry64=entry64, boot_params_addr=self.bp_seg.mem,
            kernel_addr=kernel_addr, kernel_memsz=kernel_memsz,
            initrd_addr=self.initrd_addr if self.initrd_size else None,
            initrd_size=self.initrd_size, cmdline_addr=built.cmdline_addr, cmdline=self.cmdline,
            header=self.header, segments=segments, warnings=self.ctx.warnings + built.warnings,
            efi=built.efi)


def _align_up(value, align):
    return (value + align - 1) // align * align


def extract_vmlinux(buf):
    """The vmlinux ELF inside a bzImage, as a bytearray (ImageFormatError if anything is off)."""
    image = BzImage.parse(buf)
    payload = image.payload_view()
    try:
        out = decompress(payload)
    finally:
        payload.release()
    if bytes(out[:4]) != b"\x7fELF":
        raise ImageFormatError("decompressed payload is not an ELF file (starts with %s)%s"
                               % (bytes(out[:4]).hex(), DAMAGED))
    return out
