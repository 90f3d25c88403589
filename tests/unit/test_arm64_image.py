"""arm64 kernel images: Debian's real signed PE Images, and Image.gz and EFI zboot images built
here around them by the formats' own layout (zboot-header.S, Makefile.zboot), read back by the
loader's formats and compared with what an independent reading of the same bytes says."""

import gzip
import lzma
import struct
import sys

import pytest

from tests.kernels import KernelUnavailable, kernel_package
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import arch as _arch
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64 import header as h
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64.image import Image
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64.image_gz import ImageGz
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64.zboot import Zboot
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import pe
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import ImageFormatError

ARM64 = _arch.for_machine("aarch64")
VERSIONS = ("6.1.0-54-arm64", "6.1.0-56-arm64")
LINUX_PE_MAGIC = 0x818223CD


@pytest.fixture(scope="module", params=VERSIONS)
def debian(request):
    try:
        pkg = kernel_package(request.param)
    except KernelUnavailable as err:
        pytest.skip(str(err).splitlines()[0])
    with open(pkg.vmlinuz, "rb") as f:
        return pkg, f.read()


def independent_header(data):
    """booting.rst's 64-byte header, read without the loader."""
    code0, _c1, text_offset, image_size, flags, r2, r3, r4, magic, res5 = struct.unpack_from("<IIQQQQQQII", data, 0)
    return {"code0": code0, "text_offset": text_offset, "image_size": image_size, "flags": flags,
            "reserved": (r2, r3, r4), "magic": magic, "pe": res5}


def zboot(image, method="gzip", name=None, trailer=True):
    """An EFI zboot file around ``image`` (padded to image_size first, as Makefile.zboot does)."""
    size = independent_header(image)["image_size"]
    padded = bytes(image[:size]) + bytes(max(0, size - len(image)))
    if method == "gzip":
        payload, stream_len = gzip.compress(padded, 1), None
    elif method == "xz":
        payload = lzma.compress(padded, lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=0)
    elif method == "zstd":
        zstandard = pytest.importorskip("zstandard")
        payload = zstandard.ZstdCompressor(level=1).compress(padded)
    else:
        payload = b"\x02\x21\x4c\x18" + bytes(64)
    stream_len = len(payload)
    if method != "gzip" and trailer:
        payload += struct.pack("<I", len(padded))  # the build's size_append, not counted in the header
    offset = 0x1000
    head = bytearray(offset)
    head[0:4] = b"MZ\0\0"
    head[4:8] = b"zimg"
    struct.pack_into("<II", head, 8, offset, stream_len)
    label = (name or {"gzip": "gzip", "xz": "xzkern", "zstd": "zstd22"}.get(method, method)).encode()
    head[0x18:0x18 + len(label)] = label
    struct.pack_into("<II", head, 0x38, LINUX_PE_MAGIC, 0x40)
    head[0x40:0x46] = b"PE\0\0\x64\xaa"  # PE signature, IMAGE_FILE_MACHINE_ARM64
    return bytes(head) + payload


def test_debian_image_header_matches_an_independent_reading(debian):
    pkg, data = debian
    ours = h.ImageHeader.parse(data)
    theirs = independent_header(data)
    assert theirs["magic"] == 0x644D5241 and theirs["reserved"] == (0, 0, 0)
    assert (ours.text_offset, ours.image_size, ours.flags) == (theirs["text_offset"], theirs["image_size"], theirs["flags"])
    assert ours.text_offset == 0  # Linux 5.8 and later
    assert ours.page_size == 4096 and pkg.config_value("ARM64_4K_PAGES") == "y"
    assert ours.anywhere and not ours.flags & 1
    # The EFI stub: "MZ" in code0, the PE header where res5 says, an Authenticode table (signed).
    assert ours.has_pe_stub and data[:2] == b"MZ" and data[theirs["pe"]:theirs["pe"] + 4] == b"PE\0\0"
    assert Image.signed(data) and pe.security_directory(data)[0] + pe.security_directory(data)[1] == len(data)
    assert ARM64.probe(data) is Image
    kimage = Image.kernel(data)
    assert kimage.memsz == theirs["image_size"] and len(kimage.data) == min(len(data), theirs["image_size"])
    assert Image.need(data) == ARM64.kernel_need(data) == theirs["image_size"]


def test_image_gz_round_trip(debian):
    _pkg, data = debian
    packed = gzip.compress(data, 1)
    assert ARM64.probe(packed) is ImageGz and not ImageGz.signed(packed)
    kimage = ImageGz.kernel(packed)
    assert bytes(kimage.data) == data[:independent_header(data)["image_size"]]
    assert kimage.header == h.ImageHeader.parse(data) and kimage.format == "Image.gz"
    assert ARM64.kernel_need(packed) == independent_header(data)["image_size"]


@pytest.mark.parametrize("method", ["gzip", "zstd", "xz"])
def test_zboot_payloads_inflate_to_the_padded_image(debian, method):
    _pkg, data = debian
    size = independent_header(data)["image_size"]
    image = zboot(data, method)
    assert ARM64.probe(image) is Zboot  # before Image: it is "MZ" too, but has no arm64 magic at 0x38
    assert not Image.probe(image)
    kimage = Zboot.kernel(image)
    assert len(kimage.data) == size and kimage.memsz == size
    assert bytes(kimage.data[:len(data)]) == data[:size] and not any(bytes(kimage.data[len(data):]))
    assert ARM64.kernel_need(image) == size
    assert Zboot.need(image) == size


def test_zboot_refusals_say_what_to_use(debian, monkeypatch):
    _pkg, data = debian
    with pytest.raises(ImageFormatError, match="lz4, which the Python standard library cannot inflate"):
        Zboot.kernel(zboot(data[:1 << 20], "lz4"))
    with pytest.raises(ImageFormatError, match="compressed with 'brotli'"):
        Zboot.kernel(zboot(data[:1 << 20], "lz4", name="brotli"))
    # zstd without the optional module: a clear refusal naming what to install or use instead.
    pytest.importorskip("zstandard")
    image = zboot(data, "zstd")
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(ImageFormatError, match="install it .python3-zstandard. or use a gzip/xz kernel"):
        Zboot.kernel(image)


def test_zboot_damage_is_refused(debian):
    _pkg, data = debian
    image = bytearray(zboot(data, "gzip"))
    truncated = bytes(image[:len(image) // 2])
    with pytest.raises(ImageFormatError, match="outside the"):
        Zboot.kernel(truncated)
    image[0x1000 + 5000] ^= 0xFF
    with pytest.raises(ImageFormatError, match="zboot kernel .gzip payload at 0x1000."):
        Zboot.kernel(bytes(image))
    not_arm = zboot(b"\0" * 0x38 + b"ARM\x64" + bytes(8) + b"x" * 4000, "gzip")
    not_arm = not_arm[:0x1000] + gzip.compress(b"\x7fELF" + bytes(5000))
    fixed = bytearray(not_arm)
    struct.pack_into("<I", fixed, 12, len(not_arm) - 0x1000)
    with pytest.raises(ImageFormatError, match="not an arm64 Image"):
        Zboot.kernel(bytes(fixed))


@pytest.mark.parametrize("patch,message", [
    ((24, 1), "big-endian arm64 kernel"),
    ((16, 0), "image_size 0 .a kernel older than 3.17"),
    ((8, 0x1234), "text_offset 0x1234, which is not a page multiple"),
    ((16, 1 << 40), "not a kernel"),
])
def test_header_refusals(debian, patch, message):
    _pkg, data = debian
    bad = bytearray(data[:4096])
    struct.pack_into("<Q", bad, patch[0], patch[1])
    with pytest.raises(ImageFormatError, match=message):
        h.ImageHeader.parse(bytes(bad))


def test_what_is_not_an_arm64_kernel():
    with pytest.raises(ImageFormatError, match="unrecognised kernel image for arm64 .an ELF file"):
        ARM64.probe(b"\x7fELF" + bytes(100))
    with pytest.raises(ImageFormatError, match="first bytes 4d5a0000"):
        ARM64.probe(b"MZ\0\0" + bytes(100))  # a PE without zboot or arm64 magic (an x86 bzImage stub)
    with pytest.raises(ImageFormatError, match="too short"):
        h.ImageHeader.parse(b"MZ")
    assert not ImageGz.probe(gzip.compress(b"not a kernel" * 100))


def test_x86_bzimage_is_not_taken_for_arm64():
    try:
        pkg = kernel_package("6.1.0-56-amd64")
    except KernelUnavailable as err:
        pytest.skip(str(err).splitlines()[0])
    with open(pkg.vmlinuz, "rb") as f:
        data = f.read(1 << 16)
    assert not any(fmt.probe(data) for fmt in ARM64.formats)
