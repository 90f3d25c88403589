"""ppc64le kernels: Debian's real vmlinux images (6.1 with 64 KiB pages, 6.12 with 4 KiB), what
the loader reads from them, the crash-kernel refusals, and __run_at_load in a real crash load."""

import mmap
import os
import struct

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import arch as archmod
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.ppc64le import boot
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.ppc64le import elf_kernel as ek
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import elf
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import HostError, ImageFormatError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host

from tests.kernels import KernelUnavailable, kernel_package
from tests.unit import ppc64le_host

PPC_VERSIONS = ("6.1.0-54-powerpc64le", "6.1.0-56-powerpc64le", "6.12.118+deb12-powerpc64le")
ARCH = archmod.for_machine("ppc64le")
MiB = 1 << 20


@pytest.fixture(scope="module")
def ppc_kernels():
    out = {}
    for version in PPC_VERSIONS:
        try:
            out[version] = kernel_package(version)
        except KernelUnavailable as err:
            pytest.skip("linux-image-%s unavailable: %s" % (version, str(err).splitlines()[0]))
    return out


def mapped(path):
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


@pytest.fixture(scope="module")
def dtb():
    return ppc64le_host.qemu_dtb_or_skip()


@pytest.fixture(scope="module")
def crash_host(ppc_kernels, dtb, tmp_path_factory):
    k = ppc_kernels["6.1.0-56-powerpc64le"]
    root = ppc64le_host.make_sysroot(str(tmp_path_factory.mktemp("pseries")), dtb, k.version, config=k.config,
                                     crash=(512 * MiB, 512 * MiB))
    return Host.read(root)


@pytest.mark.parametrize("version", PPC_VERSIONS)
def test_debian_kernels_are_relocatable_elf_with_run0(ppc_kernels, version):
    k = ppc_kernels[version]
    buf = mapped(k.vmlinuz)
    assert ARCH.probe(buf) is ek.Ppc64Kernel
    image = ek.Ppc64Kernel.parse(buf)
    assert image.elf.e_machine == elf.EM_PPC64 and image.elf.e_entry == ek.KERNELBASE
    assert image.entry_offset() == 0 and image.load_header.p_paddr == 0
    assert image.relocatable is True and k.config_value("RELOCATABLE") == "y"
    assert image.has_run_at_load and image.run_at_load_word() == 0x72756E30
    assert bytes(image.head()[0x5C:0x60]) == b"0nur"  # "run0" as a little-endian word
    assert image.crash_refusal() is None
    # The loaded size is the PT_LOAD's memory (bss included), what the crash region must hold.
    assert image.memsz > image.load_header.p_filesz and ARCH.kernel_need(buf) == image.memsz
    assert image.align(4096) == image.align(65536) == 0x10000
    # The kernels' own page sizes differ: 64 KiB in 6.1, 4 KiB in 6.12.
    assert k.config_value("PPC_64K_PAGES" if version.startswith("6.1.0") else "PPC_4K_PAGES") == "y"


def test_signature_and_file_load_checks(ppc_kernels):
    buf = mapped(ppc_kernels["6.1.0-56-powerpc64le"].vmlinuz)
    assert not ek.Ppc64Kernel.signed(buf)  # Debian's ppc64el kernels are not signed
    assert ek.Ppc64Kernel.signed(bytes(buf[:4096]) + b"sig" + ek.SIGNATURE_MARKER)
    lockdown = Host(arch="ppc64le", lockdown="integrity")
    with pytest.raises(ImageFormatError, match="carries no signature"):
        ARCH.check_file_load(ek.Ppc64Kernel, buf, lockdown)
    ARCH.check_file_load(ek.Ppc64Kernel, buf, Host(arch="ppc64le", lockdown="none"))


def test_other_files_are_not_ppc64_kernels(ppc_kernels, tmp_path):
    amd64 = kernel_package("6.1.0-56-amd64")
    with pytest.raises(ImageFormatError, match="ppc64le kernels are ELF files"):
        ARCH.probe(mapped(amd64.vmlinuz))
    assert archmod.for_machine("x86_64").probe(mapped(amd64.vmlinuz)).name == "bzImage"
    with pytest.raises(ImageFormatError, match="not an x86_64"):
        archmod.for_machine("x86_64").probe(mapped(ppc_kernels["6.1.0-56-powerpc64le"].vmlinuz))


def _copy(k):
    with open(k.vmlinuz, "rb") as f:
        return bytearray(f.read())


def _load_offset(buf):
    return ek.Ppc64Kernel.parse(buf).load_header.p_offset


def test_without_run0_a_kernel_is_refused_as_crash_kernel(ppc_kernels):
    buf = _copy(ppc_kernels["6.1.0-56-powerpc64le"])
    struct.pack_into("<I", buf, _load_offset(buf) + 0x5C, 0)
    image = ek.Ppc64Kernel.parse(buf)
    assert image.relocatable and not image.has_run_at_load
    assert "no __run_at_load word" in image.crash_refusal() and "0x00000000" in image.crash_refusal()


def test_without_dynamic_relocations_a_kernel_is_not_relocatable(ppc_kernels):
    buf = _copy(ppc_kernels["6.1.0-56-powerpc64le"])
    ef = elf.ElfFile(bytes(buf))
    shentsize = struct.unpack_from("<H", buf, 58)[0]
    for sec in ef.sections:
        if sec.sh_type == elf.SHT_DYNAMIC:
            struct.pack_into("<I", buf, ef.e_shoff + sec.index * shentsize + 4, elf.SHT_PROGBITS)
    struct.pack_into("<I", buf, _load_offset(buf) + 0x5C, 0)
    image = ek.Ppc64Kernel.parse(buf)
    assert not image.relocatable
    assert "not relocatable" in image.crash_refusal()


def test_damaged_and_foreign_elf_files_say_what_they_are(ppc_kernels):
    good = _copy(ppc_kernels["6.1.0-56-powerpc64le"])
    bad = bytearray(good[:4096])
    with pytest.raises(ImageFormatError, match="truncated|outside"):
        ek.Ppc64Kernel.parse(bad)
    two = bytearray(good)
    phoff = struct.unpack_from("<Q", two, 32)[0]
    struct.pack_into("<I", two, phoff + 56, elf.PT_LOAD)  # the NOTE becomes a second PT_LOAD
    with pytest.raises(ImageFormatError, match="2 PT_LOAD segments"):
        ek.Ppc64Kernel.parse(two)
    entry = bytearray(good)
    struct.pack_into("<Q", entry, 24, 0xD000000000001234)
    with pytest.raises(ImageFormatError, match="entry point 0xd000000000001234"):
        ek.Ppc64Kernel.parse(entry)


def _crash_load(host, buf, run_at_load=None):
    plan = ARCH.new_plan(host, "crash")
    crash = ARCH.prepare_crash(plan, host, "root=/dev/vda")
    image = boot.load(buf, None, crash.cmdline, host, plan, crash=crash, entropy=lambda n: b"\x5a" * n,
                      run_at_load=run_at_load)
    linked = ARCH.link_purgatory(plan, image, crash)
    plan.check()
    return plan, image, linked


def test_run_at_load_is_exactly_one_word_of_what_goes_to_address_zero(ppc_kernels, crash_host):
    """The 0x100 bytes kexec_sequence copies from the entry point to address 0: with the crash
    load's __run_at_load = 1 and with the kernel's "run0" left alone they differ in one 32-bit
    word, at 0x5c, and are otherwise the kernel's own first 0x100 bytes after our branch."""
    buf = mapped(ppc_kernels["6.1.0-56-powerpc64le"].vmlinuz)
    kernel_head = ek.Ppc64Kernel.parse(buf).head()
    outs = []
    for run_at_load in (None, False):
        plan, image, linked = _crash_load(crash_host, buf, run_at_load)
        seg = linked.segment
        at = plan.entry - seg.mem
        outs.append((bytes(memoryview(seg.buf)[at:at + 0x100]), image, linked))
    (set_, image_set, linked_set), (left, image_left, dummy) = outs

    def words(b):
        return struct.unpack("<64I", b)

    differ = [i * 4 for i, (x, y) in enumerate(zip(words(set_), words(left))) if x != y]
    assert differ == [0x5C]
    assert words(set_)[0x5C // 4] == 1 and words(left)[0x5C // 4] == 0x72756E30
    assert set_[4:] == ek.patched_head(kernel_head, 1)[4:] and left[4:] == kernel_head[4:]
    assert words(set_)[0] >> 26 == 18 and words(set_)[0] & 3 == 0  # "b master": relative, no link
    # Purgatory also writes the word into the loaded kernel, where head_64.S reads it (r26 + 0x5c).
    run = linked_set.symbol_address("fleetboot_run_at_load") - linked_set.segment.mem
    assert struct.unpack_from("<Q", linked_set.segment.buf, run)[0] == 1
    assert image_set.run_at_load == 1 and image_left.run_at_load == 0
    kernel = [s for s in plan.segments if s.what == "kernel"][0]
    assert kernel.mem == image_set.kernel and crash_host.crash_region.start <= kernel.mem


def test_normal_loads_leave_run0_alone(ppc_kernels, crash_host):
    buf = mapped(ppc_kernels["6.1.0-56-powerpc64le"].vmlinuz)
    plan = ARCH.new_plan(crash_host, "normal")
    image = boot.load(buf, None, "root=/dev/vda", crash_host, plan, entropy=lambda n: b"\x5a" * n)
    linked = ARCH.link_purgatory(plan, image)
    at = plan.entry - linked.segment.mem
    assert bytes(memoryview(linked.segment.buf)[at + 4:at + 0x100]) == ek.Ppc64Kernel.parse(buf).head()[4:]
    assert image.run_at_load == 0


def test_crash_loads_of_unfit_kernels_are_refused_before_anything(ppc_kernels, crash_host):
    buf = _copy(ppc_kernels["6.1.0-56-powerpc64le"])
    struct.pack_into("<I", buf, _load_offset(buf) + 0x5C, 0x60000000)  # a nop where "run0" should be
    plan = ARCH.new_plan(crash_host, "crash")
    with pytest.raises(ImageFormatError, match="cannot load it as a crash kernel: the kernel has no __run_at_load"):
        boot.load(buf, None, "", crash_host, plan)
    assert plan.segments == []


def test_a_host_without_its_device_tree_is_refused(ppc_kernels, crash_host, tmp_path):
    host = Host(arch="ppc64le", release="x", cmdline="", memory_map=crash_host.memory_map, sysroot=str(tmp_path))
    with pytest.raises(HostError, match="has no device tree"):
        ARCH.new_plan(host, "normal")
    assert os.listdir(str(tmp_path)) == []
