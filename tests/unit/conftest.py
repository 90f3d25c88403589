"""Shared fixtures for unit tests: real Debian kernels (downloaded once, cached) and fake hosts."""

import mmap
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.kernels import TEST_VERSIONS, KernelUnavailable, kernel_package  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, ".build", "collections"))
# The guard against real syscalls, shared with the tests that ship (tests/unit/plugins/), applies to
# every test here too.
from tests.unit.plugins.conftest import no_real_syscalls  # noqa: E402,F401  pylint: disable=unused-import


@pytest.fixture
def fixed_entropy(monkeypatch):
    """The loader's RNG seeds come from a fixed source, so two plans of the same inputs are equal
    byte for byte (every other test gets fresh bytes, as hosts do)."""
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import loader

    def fixed(n):
        return bytes((i * 7 + 3) & 0xFF for i in range(n))
    monkeypatch.setattr(loader.Stages, "entropy", staticmethod(fixed))
    return fixed


def newc_initrd(size, name="payload"):
    """A real initramfs (a newc cpio archive: one member of ``size`` random bytes, then the
    trailer), as the loader's initramfs walk and the kernel's unpacker take it."""
    def member(member_name, data, mode):
        encoded = member_name.encode() + b"\0"
        fields = [1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out = b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        return out + b"\0" * (-len(out) % 4)
    return member(name, os.urandom(size), 0o100644) + member("TRAILER!!!", b"", 0)


@pytest.fixture
def files(tmp_path):
    """A small fake kernel and initrd (random bytes) for loader tests that stub the formats."""
    k = tmp_path / "vmlinuz"
    k.write_bytes(os.urandom(3 * 4096 + 17))
    i = tmp_path / "initrd.img"
    i.write_bytes(newc_initrd(2 * 4096 + 5))
    return str(k), str(i)


@pytest.fixture(scope="session")
def debian_kernels():
    """{version: KernelPackage} for the Debian kernels tests run against (skip if unreachable)."""
    out = {}
    for version in TEST_VERSIONS:
        try:
            out[version] = kernel_package(version)
        except KernelUnavailable as err:
            pytest.skip("real Debian kernel linux-image-%s unavailable (no network or no apt?): %s"
                        % (version, str(err).splitlines()[0]))
    return out


@pytest.fixture(scope="session", params=TEST_VERSIONS)
def kernel(request, debian_kernels):
    """One KernelPackage per test version (tests using it run once per kernel)."""
    return debian_kernels[request.param]


def map_file(path):
    """Read-only mmap of a file (what the loader does with real kernels)."""
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


@pytest.fixture(scope="session")
def vmlinuz_maps(debian_kernels):
    """{version: mmap of vmlinuz}."""
    return {v: map_file(k.vmlinuz) for v, k in debian_kernels.items()}


@pytest.fixture(scope="session")
def vmlinuz(kernel, vmlinuz_maps):
    """mmap of the current test kernel's vmlinuz."""
    return vmlinuz_maps[kernel.version]


@pytest.fixture(scope="session")
def vmlinux_cache():
    """Decompressed vmlinux per version, computed once per session."""
    return {}


# -- fake hosts ---------------------------------------------------------------------------------

def qemu_ranges(ram_top=0x140000000):
    """A 5 GiB QEMU-like firmware map: low RAM, BIOS holes, RAM to 3 GiB, PCI hole, RAM above 4 GiB."""
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import Range
    return [
        Range(0x0, 0x9FC00, "System RAM"),
        Range(0x9FC00, 0xA0000, "Reserved"),
        Range(0xF0000, 0x100000, "Reserved"),
        Range(0x100000, 0xBFFE0000, "System RAM"),
        Range(0xBFFE0000, 0xC0000000, "Reserved"),
        Range(0xFEFFC000, 0xFF000000, "Reserved"),
        Range(0xFFFC0000, 0x100000000, "Reserved"),
        Range(0x100000000, ram_top, "System RAM"),
    ]


@pytest.fixture
def qemu_host():
    """A Host value for a BIOS-booted 5 GiB VM (no EFI, no running boot_params)."""
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import MemoryMap
    return Host(arch="x86_64", release="6.1.0-56-amd64", cmdline="", memory_map=MemoryMap(qemu_ranges()),
                efi=False, secure_boot=False, boot_params=None, acpi_rsdp=None)
