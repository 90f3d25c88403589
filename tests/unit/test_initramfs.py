"""An initrd is walked the way the kernel's unpacker reads it; what it would not take is refused
before anything reaches the kernel.  Archives come from cpio(1) itself where it is installed (an
independent writer of the format), and from a small writer here for the corrupt shapes."""

import bz2
import gzip
import lzma
import os
import shutil
import subprocess

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import loader
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.request import Request
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as sc
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import ImageFormatError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.initramfs import (
    check_initramfs, initramfs_format)

SYSROOT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "sysroots", "lab-seabios-pc-1g")


def member(name, data=b"", mode=0o100644, magic=b"070701"):
    """One newc member: the 110-byte header, the NUL-terminated name and the data, 4-aligned."""
    name = name.encode() + b"\0"
    fields = [1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name), 0]
    head = magic + b"".join(b"%08X" % f for f in fields)
    out = head + name
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)


def archive(*files):
    """A newc archive of (name, data) pairs ending in TRAILER!!!."""
    return b"".join(member(n, d) for n, d in files) + member("TRAILER!!!", mode=0)


MAIN = archive(("init", b"#!/bin/sh\nexec /sbin/init\n"), ("etc/fstab", b"x" * 1000), ("lib/big.ko", os.urandom(300000)))
MICROCODE = archive(("kernel/x86/microcode/GenuineIntel.bin", b"\x01" * 5000))


def real_cpio(tmp_path, files, fmt="newc"):
    """An archive written by cpio(1) (skip when cpio is not installed)."""
    if shutil.which("cpio") is None:
        pytest.skip("cpio(1) is not installed (make deps installs it)")
    root = tmp_path / ("tree-" + fmt)
    for name, data in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    names = "\n".join(n for n, dummy in files) + "\n"
    return subprocess.run(["cpio", "-o", "-H", fmt, "--quiet"], input=names.encode(), cwd=str(root),
                          stdout=subprocess.PIPE, check=True).stdout


# mtime=0 and explicit ids: pytest-xdist workers must collect identical test names.
@pytest.mark.parametrize("data,fmt", [
    (MAIN, "cpio"),
    (MAIN.replace(b"070701", b"070702"), "cpio"),
    (b"\0" * 512 + MAIN, "cpio"),                                    # padding the kernel skips
    (MICROCODE + b"\0" * 200 + gzip.compress(MAIN, mtime=0), "cpio"),  # Debian: microcode cpio first
    (MICROCODE + MAIN, "cpio"),                                      # two plain archives
    (gzip.compress(MAIN, mtime=0), "gzip"),
    (lzma.compress(MAIN, format=lzma.FORMAT_XZ), "xz"),
    (lzma.compress(MAIN, format=lzma.FORMAT_ALONE), "lzma"),
    (bz2.compress(MAIN), "bzip2"),
    (b"\x02\x21\x4c\x18" + b"\0" * 20, "lz4"),                      # no stdlib decompressor: by magic
], ids=["newc", "crc", "padded", "microcode+gzip", "two-archives", "gzip", "xz", "lzma", "bzip2", "lz4"])
def test_initramfs_shapes_the_kernel_takes_are_accepted(data, fmt):
    assert check_initramfs(data, "initrd.img") == fmt


def test_zstd_is_checked_when_zstandard_is_there():
    zstandard = pytest.importorskip("zstandard")
    good = zstandard.ZstdCompressor().compress(MAIN)
    assert check_initramfs(good, "initrd.img") == "zstd"
    with pytest.raises(ImageFormatError, match="zstd-compressed part at offset 0x0 is corrupt"):
        check_initramfs(good[:4] + os.urandom(200), "initrd.img")


def test_archives_written_by_cpio_itself(tmp_path):
    files = [("init", b"#!/bin/sh\n"), ("bin/sh", os.urandom(5000)), ("a/b/c", b"")]
    newc = real_cpio(tmp_path, files)
    assert check_initramfs(newc, "initrd.img") == "cpio"
    assert check_initramfs(gzip.compress(newc, mtime=0), "initrd.img") == "gzip"
    with pytest.raises(ImageFormatError, match=r"old-format \(odc or binary\).*cpio -H newc"):
        check_initramfs(real_cpio(tmp_path, files, "odc"), "initrd.img")
    with pytest.raises(ImageFormatError, match=r"old-format \(odc or binary\)"):
        check_initramfs(real_cpio(tmp_path, files, "bin"), "initrd.img")


@pytest.mark.parametrize("data,message", [
    (b"070701", "truncated"),                                        # a bare magic
    (MAIN[:50], "truncated"),                                        # cut inside the first header
    (MAIN[:200], "truncated"),                                       # cut inside a member's data
    (MAIN[:-20], "truncated"),                                       # cut inside the trailer
    (MAIN[:6] + b"zzzzzzzz" + MAIN[14:], "not 8 hex digits"),
    (member("x").replace(b"%08X" % 2, b"%08X" % 0, 1)[:110] + b"x\0\0\0", "name of 0 bytes"),
    (MAIN[:110] + MAIN[110:114].replace(b"init", b"ini\xff") + MAIN[114:], None),  # odd name bytes: fine
    (gzip.compress(MAIN, mtime=0)[:10] + os.urandom(100), "gzip-compressed part at offset 0x0 is corrupt"),
    (gzip.compress(b"not a cpio archive at all" * 10, mtime=0), "expected the next cpio header"),
    (MICROCODE + b"garbage!" * 10, "neither a cpio archive nor a compressed stream"),
    (b"\0\0" + MAIN, "not 4-byte aligned"),
], ids=["bare-magic", "cut-header", "cut-data", "cut-trailer", "bad-hex", "empty-name", "odd-name",
        "gzip-garbage", "gzip-not-cpio", "garbage-after-archive", "unaligned"])
def test_what_the_unpacker_would_reject_is_refused(data, message):
    if message is None:
        assert check_initramfs(data, "/x") == "cpio"
        return
    with pytest.raises(ImageFormatError, match=message) as err:
        check_initramfs(data, "/x")
    assert "nothing was loaded" in str(err.value) or "rebuild" in str(err.value)


@pytest.mark.parametrize("data,hint", [
    (b"this is not an initramfs at all", ""),
    (b"\0" * (2 << 20), ""),                                 # zeros only
    (b"\x7fELF" + b"\0" * 60, "kernel image"),
    (b"\0" * 0x202 + b"HdrS" + b"\0" * 100, "kernel image"),  # a bzImage
], ids=["text", "zeros", "elf", "bzimage"])
def test_other_files_are_refused_with_advice(data, hint):
    assert initramfs_format(data) is None
    with pytest.raises(ImageFormatError, match="initrd /x is not an initramfs") as err:
        check_initramfs(data, "/x")
    assert "nothing was loaded" in str(err.value) and hint in str(err.value)


def test_a_large_plain_archive_is_walked_without_copying_it(tmp_path):
    """Thousands of members, one mapping: the walk reads headers only (bounded memory)."""
    path = tmp_path / "big.img"
    with open(str(path), "wb") as f:
        for i in range(3000):
            f.write(member("lib/modules/m%d.ko" % i, b"\x7f" * 4000))
        f.write(member("TRAILER!!!", mode=0))
    import mmap
    with open(str(path), "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            assert check_initramfs(m, str(path)) == "cpio"
        finally:
            m.close()


@pytest.mark.parametrize("method", ["classic", "file"])
def test_loader_refuses_a_garbage_initrd_before_any_syscall(tmp_path, method, debian_kernels):
    kernel = debian_kernels["6.1.0-56-amd64"].vmlinuz
    garbage = tmp_path / "initrd.img"
    garbage.write_bytes(b"G" + os.urandom(1 << 16))
    host = Host.read(SYSROOT)
    fake = sc.FakeSyscalls()
    with pytest.raises(ImageFormatError, match="is not an initramfs"):
        loader.load(Request(kernel, str(garbage), "console=ttyS0", method=method), fake, host)
    assert fake.calls == []
