"""vmlinux extraction from real Debian bzImages, decompressors, and the ELF vmlinux loader."""

import bz2
import gzip
import io
import lzma
import struct
import sys

import pytest
from elftools.elf.elffile import ELFFile

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import bootparams as bp
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import elf as kelf
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import ImageFormatError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import ARCH as X86_64
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64.bzimage import BzImage, SetupHeader, extract_vmlinux
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64.vmlinux import Vmlinux
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import decompress as dc
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import Plan


@pytest.fixture(scope="session")
def vmlinux(kernel, vmlinuz, vmlinux_cache):
    """The vmlinux ELF decompressed from the test kernel (once per session)."""
    if kernel.version not in vmlinux_cache:
        vmlinux_cache[kernel.version] = extract_vmlinux(vmlinuz)
    return vmlinux_cache[kernel.version]


def test_payload_is_xz_with_declared_size(vmlinuz, vmlinux):
    image = BzImage.parse(vmlinuz)
    payload = image.payload_view()
    assert dc.detect(payload) == "xz"
    assert dc.declared_size(payload) == len(vmlinux)


def test_extracted_vmlinux_is_sane_elf(kernel, vmlinuz, vmlinux):
    ef = ELFFile(io.BytesIO(bytes(vmlinux)))
    assert ef.elfclass == 64 and ef.little_endian
    assert ef["e_machine"] == "EM_X86_64" and ef["e_type"] == "ET_EXEC"
    # x86's linker script makes the entry the *physical* startup_64 at CONFIG_PHYSICAL_START.
    start = int(kernel.config_value("PHYSICAL_START"), 0)
    assert ef["e_entry"] == start
    loads = [s for s in ef.iter_segments() if s["p_type"] == "PT_LOAD"]
    assert len(loads) >= 3
    assert min(s["p_paddr"] for s in loads) == start
    text = min(loads, key=lambda s: s["p_paddr"])
    assert text["p_vaddr"] == 0xFFFFFFFF80000000 + start  # __START_KERNEL_map + PHYSICAL_START
    assert text["p_flags"] & 1  # executable
    for s in loads:
        assert s["p_paddr"] % 4096 == 0 and s["p_filesz"] <= s["p_memsz"]
    hi = max(s["p_paddr"] + s["p_memsz"] for s in loads)
    # init_size covers the decompressed kernel in place (boot.rst): it must hold every PT_LOAD.
    assert SetupHeader.parse(vmlinuz).init_size >= hi - start
    # Our ELF reader agrees with pyelftools.
    ours = kelf.ElfFile(vmlinux)
    assert ours.e_entry == ef["e_entry"]
    for ours_type, theirs_type in ((kelf.PT_LOAD, "PT_LOAD"), (kelf.PT_NOTE, "PT_NOTE")):
        got = [(p.p_offset, p.p_vaddr, p.p_paddr, p.p_filesz, p.p_memsz)
               for p in ours.segments if p.p_type == ours_type]
        want = [(s["p_offset"], s["p_vaddr"], s["p_paddr"], s["p_filesz"], s["p_memsz"])
                for s in ef.iter_segments() if s["p_type"] == theirs_type]
        assert got == want and got


def test_vmlinux_probe_and_load(vmlinux, qemu_host):
    assert Vmlinux.probe(vmlinux) and not BzImage.probe(vmlinux)
    assert X86_64.probe(vmlinux) is Vmlinux
    plan = Plan(qemu_host.memory_map)
    initrd = b"\x07" * 300000
    li = Vmlinux.load(vmlinux, initrd, "console=ttyS0", qemu_host, plan)
    image = Vmlinux.parse(vmlinux)
    loads = image.loads()
    segs = [s for s in plan.segments if s.what.startswith("vmlinux.")]
    assert [(s.mem, s.bufsz) for s in segs] == [(p.p_paddr, p.p_filesz) for p in loads]
    assert all(s.memsz >= p.p_memsz for s, p in zip(segs, loads))
    assert li.entry64 == image.elf.e_entry == 0x1000000
    assert li.regs["rsi"] == plan.segment("boot_params").mem
    plan.check()
    zp = bp.parse_zero_page(plan.segment("boot_params").buf)
    assert zp["header"] == b"HdrS" and zp["version"] == 0x020F
    assert zp["ramdisk_image"] == plan.segment("initrd").mem
    # PT_LOAD data is a view into the caller's buffer, not a copy
    assert segs[0].buf.obj is vmlinux


def test_vmlinux_virtual_entry_is_translated(vmlinux):
    data = bytearray(vmlinux)
    struct.pack_into("<Q", data, 24, 0xFFFFFFFF81000000)
    assert Vmlinux.parse(data).entry() == 0x1000000


def test_vmlinux_refusals(vmlinux):
    data = bytearray(vmlinux[:4096])
    struct.pack_into("<H", data, 18, 183)  # EM_AARCH64
    assert not Vmlinux.probe(data)
    with pytest.raises(ImageFormatError, match="not an x86_64"):
        Vmlinux.parse(data)
    data = bytearray(vmlinux)
    struct.pack_into("<Q", data, 24, 0x12345)  # entry outside every PT_LOAD
    with pytest.raises(ImageFormatError, match="entry point"):
        Vmlinux.parse(data)


# -- decompressors ---------------------------------------------------------------------------

SAMPLE = b"\x7fELF" + bytes(range(256)) * 2000


def _kernel_style(compressed, size=len(SAMPLE)):
    return compressed + struct.pack("<I", size)


@pytest.mark.parametrize("name,compress", [
    ("gzip", lambda d: gzip.compress(d, 9)),
    ("xz", lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)),
    ("lzma", lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE)),
    ("bzip2", lambda d: bz2.compress(d, 9)),
])
def test_stdlib_formats(name, compress):
    payload = _kernel_style(compress(SAMPLE))
    assert dc.detect(payload) == name
    assert bytes(dc.decompress(memoryview(payload))) == SAMPLE


def test_declared_size_mismatch_is_refused():
    payload = _kernel_style(gzip.compress(SAMPLE), size=len(SAMPLE) + 1)
    with pytest.raises(ImageFormatError, match="declares"):
        dc.decompress(payload)
    payload = _kernel_style(gzip.compress(SAMPLE), size=len(SAMPLE) - 1)
    with pytest.raises(ImageFormatError, match="more than"):
        dc.decompress(payload)


def test_truncated_stream():
    comp = lzma.compress(SAMPLE, format=lzma.FORMAT_XZ)
    with pytest.raises(ImageFormatError, match="truncated|corrupted"):
        dc.decompress(comp[: len(comp) // 2], fmt="xz", limit=1 << 24)


def test_zstd_without_module_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    payload = _kernel_style(b"\x28\xb5\x2f\xfd" + b"\0" * 32)
    assert dc.detect(payload) == "zstd"
    with pytest.raises(ImageFormatError, match="zstandard"):
        dc.decompress(payload)


def test_zstd_with_module():
    zstandard = pytest.importorskip("zstandard")
    payload = _kernel_style(zstandard.ZstdCompressor(level=19).compress(SAMPLE))
    assert bytes(dc.decompress(payload)) == SAMPLE


@pytest.mark.parametrize("magic,name", [(b"\x89LZO", "lzo"), (b"\x02\x21\x4c\x18", "lz4")])
def test_unsupported_formats_named(magic, name):
    with pytest.raises(ImageFormatError, match=name):
        dc.decompress(_kernel_style(magic + b"\0" * 64))


def test_rebuilt_gzip_bzimage_extracts(vmlinuz, vmlinux):
    """A bzImage whose payload is gzip (CONFIG_KERNEL_GZIP) extracts the same vmlinux."""
    h = SetupHeader.parse(vmlinuz)
    start = h.setup_size + h.payload_offset
    new_payload = gzip.compress(bytes(vmlinux), 1) + struct.pack("<I", len(vmlinux))
    data = bytearray(vmlinuz[:start]) + new_payload
    struct.pack_into("<I", data, 0x24C, len(new_payload))
    data += bytes(-len(data) % 16)  # syssize counts whole paragraphs
    struct.pack_into("<I", data, 0x1F4, (len(data) - h.setup_size + 15) // 16)
    assert dc.detect(BzImage.parse(data).payload_view()) == "gzip"
    assert extract_vmlinux(data) == vmlinux
