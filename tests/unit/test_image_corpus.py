"""Corrupted and truncated kernels: every failure is a KexecError, never another exception.

Truncations are memoryview slices of the mapped kernel (no copies); corruptions patch a copy.
Each case runs the whole image pipeline a user can reach: probe, parse, checks, placement into a
plan, boot_params, and (where cheap enough) payload decompression.
"""

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import KexecError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import ARCH as X86_64
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64.bzimage import BzImage, SetupHeader, extract_vmlinux
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64.vmlinux import Vmlinux
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import decompress as dc
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import Plan


def exercise(buf, host, extract=False):
    """Run everything on ``buf``; return "ok" or the KexecError. Any other exception escapes."""
    try:
        fmt = X86_64.probe(buf)
        plan = Plan(host.memory_map)
        li = fmt.load(buf, b"initrd" * 100, "console=ttyS0", host, plan)
        assert li.entry64 > 0
        plan.check()
        if extract and fmt is BzImage:
            extract_vmlinux(buf)
        return "ok"
    except KexecError as err:
        assert str(err), "a KexecError must say what is wrong"
        return err


def _cut_points(size, setup_size, payload_start, payload_end):
    rng = random.Random(1234)
    points = {0, 1, 4, 0x1F1, 0x1F2, 0x1FF, 0x200, 0x202, 0x205, 0x206, 0x207, 0x230, 0x237,
              0x260, 0x263, 0x264, 0x26B, 0x26C, 0x3FF, 0x400, 0x401, setup_size - 1, setup_size,
              setup_size + 1, setup_size + 0x200, payload_start - 1, payload_start,
              payload_start + 1, payload_start + 6, payload_start + 100, payload_end - 5,
              payload_end - 4, payload_end - 1, payload_end, size - 1}
    points.update(rng.randrange(0, size) for dummy in range(60))
    points.update(rng.randrange(0, 0x1000) for dummy in range(40))
    return sorted(p for p in points if 0 <= p < size)


def test_truncations(vmlinuz, qemu_host):
    h = SetupHeader.parse(vmlinuz)
    view = memoryview(vmlinuz)
    pstart = h.setup_size + h.payload_offset
    pend = pstart + h.payload_length
    results = {}
    for cut in _cut_points(len(view), h.setup_size, pstart, pend):
        results[cut] = exercise(view[:cut], qemu_host)
    # Everything cut before the end of the payload is refused; a cut in the appended signature
    # still boots (the kernel ignores it), and the untruncated image loads.
    for cut, res in results.items():
        if cut < pend:
            assert res != "ok", "image cut at 0x%x was accepted" % cut
    assert exercise(view, qemu_host) == "ok"


def test_truncated_payload_extraction(vmlinuz):
    h = SetupHeader.parse(vmlinuz)
    pstart = h.setup_size + h.payload_offset
    view = memoryview(vmlinuz)
    for cut in (pstart + 10, pstart + 4096, pstart + h.payload_length // 3):
        data = bytearray(view[:cut])
        struct.pack_into("<I", data, 0x24C, cut - pstart)  # header agrees with the short payload
        struct.pack_into("<I", data, 0x1F4, 0)
        with pytest.raises(KexecError):
            extract_vmlinux(data)


FIELD_CASES = [
    # (offset, format, value)
    (0x1F1, "B", 0),          # setup_sects 0 means 4: the kernel then starts in the setup code
    (0x1F1, "B", 1),
    (0x1F1, "B", 38),
    (0x1F1, "B", 40),
    (0x1F1, "B", 255),
    (0x1FE, "H", 0),          # boot_flag
    (0x202, "4s", b"HdrT"),   # magic
    (0x206, "H", 0x0100),
    (0x206, "H", 0x020B),
    (0x206, "H", 0xFFFF),
    (0x201, "B", 0),          # header end before most fields
    (0x201, "B", 0xFF),
    (0x211, "B", 0),
    (0x230, "I", 0),
    (0x230, "I", 0x80000001),
    (0x230, "I", 0x80000000),
    (0x234, "B", 0),
    (0x236, "H", 0),
    (0x236, "H", 0xFFFF),
    (0x238, "I", 0),
    (0x238, "I", 0xFFFFFFFF),
    (0x22C, "I", 0),
    (0x22C, "I", 0x1000),
    (0x248, "I", 0xFFFFFFFF),   # payload_offset
    (0x248, "I", 0x7FFFFFF0),
    (0x24C, "I", 0xFFFFFFFF),   # payload_length
    (0x24C, "I", 0),
    (0x1F4, "I", 0xFFFFFFFF),   # syssize
    (0x260, "I", 0),            # init_size
    (0x260, "I", 0xFFFFFFFF),
    (0x260, "I", 0x1000),
    (0x258, "Q", 0xFFFFFFFFFFFFFFFF),
    (0x250, "Q", 0xFFFFFFFFFFFFFFFF),
]


@pytest.fixture(scope="module")
def pristine(vmlinuz_maps):
    return {v: bytearray(m) for v, m in vmlinuz_maps.items()}


MUST_REFUSE = {(0x1F1, 0), (0x1F1, 1), (0x1F1, 38), (0x1F1, 40), (0x1F1, 255), (0x1FE, 0),
               (0x202, b"HdrT"), (0x206, 0x0100), (0x206, 0x020B), (0x211, 0), (0x230, 0),
               (0x230, 0x80000001), (0x234, 0), (0x236, 0), (0x238, 0), (0x248, 0xFFFFFFFF),
               (0x248, 0x7FFFFFF0), (0x24C, 0xFFFFFFFF), (0x1F4, 0xFFFFFFFF), (0x260, 0),
               (0x260, 0x1000)}


@pytest.mark.parametrize("off,fmt,value", FIELD_CASES)
def test_flipped_header_fields(pristine, qemu_host, off, fmt, value):
    for data in pristine.values():
        saved = bytes(data[off:off + struct.calcsize("<" + fmt)])
        struct.pack_into("<" + fmt, data, off, value)
        try:
            res = exercise(data, qemu_host)
            if isinstance(res, KexecError):
                continue
            assert (off, value) not in MUST_REFUSE, "corrupted field 0x%x=%r was accepted" % (off, value)
            # Accepted: then the plan it made must honour the (odd) header it was given.
            h = SetupHeader.parse(data)
            assert h.xloadflags & 1 and h.relocatable_kernel
        finally:
            data[off:off + len(saved)] = saved


@pytest.mark.parametrize("where", [0, 3, 6, 12, 100, 5000, "middle", -40, -5])
def test_garbage_compressed_payload(pristine, where):
    data = next(iter(pristine.values()))
    h = SetupHeader.parse(data)
    pstart = h.setup_size + h.payload_offset
    if where == "middle":
        where = h.payload_length // 2
    pos = pstart + (where if where >= 0 else h.payload_length + where)
    saved = bytes(data[pos:pos + 4])
    data[pos:pos + 4] = bytes(b ^ 0xA5 for b in saved)
    try:
        with pytest.raises(KexecError):
            extract_vmlinux(data)
    finally:
        data[pos:pos + 4] = saved


def test_garbage_payload_random_bytes(pristine):
    data = next(iter(pristine.values()))
    h = SetupHeader.parse(data)
    pstart = h.setup_size + h.payload_offset
    rng = random.Random(7)
    saved = bytes(data[pstart:pstart + 64])
    try:
        for magic in (b"\xfd7zXZ\x00", b"\x1f\x8b\x08\x00", b"\x5d\x00\x00", b"BZh9", b"\x28\xb5\x2f\xfd", b""):
            junk = magic + bytes(rng.randrange(256) for dummy in range(64 - len(magic)))
            data[pstart:pstart + 64] = junk
            with pytest.raises(KexecError):
                extract_vmlinux(data)
    finally:
        data[pstart:pstart + 64] = saved


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(patch=st.lists(st.tuples(st.integers(0x1F1, 0x26F), st.integers(0, 255)), min_size=1, max_size=12),
       cut=st.one_of(st.none(), st.integers(0, 0x9000)))
def test_hypothesis_header_bytes(small_image, fake_host, patch, cut):
    data = bytearray(small_image)
    for off, val in patch:
        data[off] = val
    if cut is not None:
        data = data[:cut]
    exercise(data, fake_host)
    Vmlinux.probe(data)
    BzImage.probe(data)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(blob=st.binary(min_size=0, max_size=2048))
def test_hypothesis_random_files(fake_host, blob):
    exercise(blob, fake_host)
    exercise(b"\x7fELF\x02\x01\x01" + blob, fake_host)
    try:
        dc.decompress(blob)
    except KexecError:
        pass


@pytest.fixture(scope="module")
def small_image(vmlinuz_maps):
    """The first 36 KiB of a real kernel: full setup code and header, a stub of kernel after."""
    m = next(iter(vmlinuz_maps.values()))
    return bytes(m[:0x9000])


@pytest.fixture(scope="module")
def fake_host():
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import MemoryMap, Range
    return Host(arch="x86_64", memory_map=MemoryMap([Range(0, 0x9F000), Range(0x100000, 0x100000000)]),
                efi=False)


def test_elf_corpus(vmlinux_maps_elf, qemu_host):
    """Truncated and patched ELF vmlinux files."""
    data = vmlinux_maps_elf
    view = memoryview(data)
    rng = random.Random(99)
    for cut in sorted({0, 4, 16, 20, 52, 63, 64, 65, 120, 0x1000, 0x200000, 0x200001}
                      | {rng.randrange(len(view)) for dummy in range(30)}):
        assert exercise(view[:cut], qemu_host) != "ok"
    patched = bytearray(data[:0x3000])
    for dummy in range(300):
        p = bytearray(patched)
        for dummy in range(rng.randrange(1, 6)):
            p[rng.randrange(0, 0x200)] = rng.randrange(256)
        exercise(p, qemu_host)


@pytest.fixture(scope="module")
def vmlinux_maps_elf(vmlinuz_maps):
    return extract_vmlinux(next(iter(vmlinuz_maps.values())))
