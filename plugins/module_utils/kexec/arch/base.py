# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an architecture provides to the loader, and the defaults most share.

The core (plan, relocation model, ELF, digests, purgatory linking) knows nothing of any
architecture; ``arch/<arch>/`` packages subclass ``Arch`` with what differs: image formats
(``probe``/``load``, the kexec-tools file_type pattern), the boot data the kernel expects, the
purgatory and its relocation types, crash specifics and limits.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..core.entropy import kernel_random
from ..core.plan import Plan
from ..errors import ImageFormatError, UnsignedImageError
from ..host.security import lockdown_mode

_U64 = (1 << 64) - 1


class Arch:
    """One architecture's loader parts.  Subclasses set the class attributes and implement the
    methods that raise NotImplementedError."""

    #: Package name under arch/ (x86_64, arm64, ppc64le).
    name = ""
    #: ``uname -m`` values this package loads for (after machines.normalize_arch).
    machines = ()
    #: ELF e_machine of its kernels, purgatory and crash dumps.
    elf_machine = None
    #: Page size when a host recording does not say (the common kernel configuration).
    default_page_size = 4096
    #: Options added to a capture kernel's command line unless already there.
    capture_options = "irqpoll nr_cpus=1 reset_devices"
    #: Image formats, in probe order (classes with name, probe(buf), load(...)).
    formats = ()
    #: Names of the formats the kernel's own kexec_file_load accepts on this architecture
    #: (kexec_file_loaders[]); empty where the kernel has no kexec_file_load in practice.
    file_load_formats = ()

    # -- limits ----------------------------------------------------------------------------------

    def page_size(self, host):
        """The host's page size, or this architecture's default when it is unknown."""
        return getattr(host, "page_size", None) or self.default_page_size

    def destination_limit(self, host):  # pylint: disable=unused-argument
        """KEXEC_DESTINATION_MEMORY_LIMIT: the highest byte a segment may reach."""
        return _U64

    def new_plan(self, host, kind, method="classic"):
        """An empty Plan for ``host`` with this architecture's page size and limits."""
        return Plan(host.memory_map, kind=kind, crash_region=host.crash_region, arch=self.name, method=method,
                    totalram_pages=_totalram_pages(host, self.page_size(host)), page_size=self.page_size(host),
                    destination_limit=self.destination_limit(host))

    # -- images ----------------------------------------------------------------------------------

    def probe(self, buf):
        """The format class that recognises ``buf``; ImageFormatError saying what it looks like."""
        for fmt in self.formats:
            if fmt.probe(buf):
                return fmt
        raise ImageFormatError(self.unrecognised(buf))

    def unrecognised(self, buf):
        """The message for a kernel file no format of this architecture recognises."""
        head = bytes(memoryview(buf)[:4])
        return ("unrecognised kernel image for %s (first bytes %s); pass the kernel image the distribution "
                "installs in /boot (vmlinuz-<version>)" % (self.name, head.hex()))

    def check_file_load(self, fmt, buf, host):
        """Refuse, before the syscall, what this architecture's kexec_file_load would refuse about the
        image itself: a format its kernel loaders do not take, or no signature where the host
        requires one (lockdown, CONFIG_KEXEC_SIG_FORCE: kimage_validate_signature)."""
        if fmt.name not in self.file_load_formats:
            takes = " or ".join(self.file_load_formats) or "no"
            raise ImageFormatError("kexec_file_load on %s takes %s kernel images, not a %s; use --method classic "
                                   "(or auto) for this one, nothing was loaded" % (self.name, takes, fmt.name))
        reason = signature_requirement(host)
        signed = getattr(fmt, "signed", None)
        if reason and signed is not None and not signed(buf):
            raise UnsignedImageError(
                "the kernel image carries no signature, but %s requires a signed kernel for kexec_file_load; use the "
                "distribution's signed kernel (linux-image-<version>, not -unsigned) or one signed for your MOK, "
                "nothing was loaded" % reason)

    def kernel_need(self, buf):
        """Bytes the kernel occupies once loaded (the crash region must hold them)."""
        return len(buf)

    def load_image(self, buf, initrd, cmdline, host, plan, crash=None, entropy=kernel_random):
        """Add kernel, initrd and boot data segments to ``plan``; return the loaded image (what
        link_purgatory needs to enter it).  ``crash`` is the CrashSetup of a crash load;
        ``entropy(n)`` gives the fresh bytes the next kernel's RNG seed is made of."""
        raise NotImplementedError

    # -- crash -----------------------------------------------------------------------------------

    def prepare_crash(self, plan, host, cmdline):
        """Reserve and fill what a capture kernel needs besides its image; return a CrashSetup."""
        raise NotImplementedError

    def kcore_layout(self, data):  # pylint: disable=unused-argument
        """(kernel_text, page_offset) from the head of /proc/kcore, (None, None) when unknown."""
        return None, None

    # -- purgatory -------------------------------------------------------------------------------

    def link_purgatory(self, plan, image, crash=None):
        """Link this architecture's purgatory last into ``plan``; returns the LinkedPurgatory."""
        raise NotImplementedError

    # -- dumps -----------------------------------------------------------------------------------

    def vmcore_memory(self, core, info):
        """A reader of the crashed kernel's virtual memory (read, u64, u32) from a vmcore."""
        raise NotImplementedError

    def __repr__(self):
        return "<Arch %s>" % self.name


def signature_requirement(host):
    """Why ``host`` only takes signed kernels through kexec_file_load (a phrase), or None."""
    lockdown = lockdown_mode(host)
    if lockdown in ("integrity", "confidentiality"):
        return "kernel lockdown (%s) on this host" % lockdown
    syscalls = getattr(host, "syscalls", None) or {}
    if syscalls.get("kexec_sig_force"):
        return "this host's kernel (built with CONFIG_KEXEC_SIG_FORCE)"
    return None


def _totalram_pages(host, page_size):
    total = getattr(host, "mem_total", None)
    return None if total is None else total // page_size
