# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an x86 kernel booted through EFI hands on to the next one, read from the host.

A kernel that booted through EFI has already called SetVirtualAddressMap(), which firmware allows
once; the next kernel may only use EFI runtime services if it is told the *same* virtual mappings
(the runtime map, /sys/firmware/efi/runtime-map) plus the firmware table addresses (SETUP_EFI).
``EfiState`` gathers them from the running kernel's boot_params.efi_info and /sys/firmware/efi;
bootparams.py writes them into the next kernel's zero page.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ...errors import HostError
from ...host.sysroot import as_sysroot, parse_u64
from .zeropage import EFI_INFO, EFI_INFO_SIZE, EFI_MEMDESC, OFF_EFI_INFO, OFF_SECURE_BOOT


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
        """Read the EFI state under ``sysroot`` (a path or a Sysroot); None if the host did not
        boot through EFI."""
        tree = as_sysroot(sysroot)
        if not tree.isdir("sys/firmware/efi"):
            return None
        if boot_params is None:
            boot_params = tree.read_bytes("sys/kernel/boot_params/data")
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
            values[name] = _read_hex(tree, "sys/firmware/efi/" + name)
            if values[name] is None and problem is None:
                problem = "/sys/firmware/efi/%s is missing" % name
        smbios = 0
        systab_text = tree.read_bytes("sys/firmware/efi/systab")
        if systab_text is not None:
            for line in systab_text.decode("ascii", "replace").splitlines():
                if line.startswith("SMBIOS="):
                    smbios = _parse_hex(line.split("=", 1)[1], tree.path("sys/firmware/efi/systab"))
        runtime_map = read_runtime_map(tree)
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


def read_runtime_map(sysroot):
    """EfiMemoryDescriptors from /sys/firmware/efi/runtime-map, in its numeric order ([] if absent)."""
    tree = as_sysroot(sysroot)
    base = "sys/firmware/efi/runtime-map"
    names = tree.listdir(base) or []
    out = []
    for name in sorted((n for n in names if n.isdigit()), key=int):
        d = base + "/" + name
        vals = [_read_hex(tree, d + "/" + f) for f in ("type", "phys_addr", "virt_addr", "num_pages", "attribute")]
        if any(v is None for v in vals):
            raise HostError("EFI runtime map entry %s is incomplete; cannot pass EFI to the new "
                            "kernel" % tree.path(d))
        out.append(EfiMemoryDescriptor(*vals))
    return out


def _parse_hex(text, where):
    text = text.strip()
    return parse_u64(text, 0 if text[:2].lower() == "0x" else 16, where)


def _read_hex(tree, rel):
    text = tree.read_text(rel)
    if text is None:
        return None
    return _parse_hex(text, tree.path(rel))


def state_for(host, boot_params=None):
    """The EfiState to hand to the next kernel of ``host``: None when the host did not boot
    through EFI; one read from the host's tree otherwise (or the EfiState / plain dict a test
    host carries)."""
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
