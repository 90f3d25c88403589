"""An initrd that is not an initramfs is refused before anything reaches the kernel."""

import gzip
import lzma
import os

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import loader
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.request import Request
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as sc
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import ImageFormatError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.initramfs import (
    check_initramfs, initramfs_format)

CPIO_NEWC = b"070701" + b"0" * 104 + b"TRAILER!!!\0"


# mtime=0 and explicit ids: pytest-xdist workers must collect identical test names.
@pytest.mark.parametrize("data,fmt", [
    (CPIO_NEWC, "cpio"),
    (b"070702" + b"0" * 50, "cpio"),
    (b"\0" * 512 + CPIO_NEWC, "cpio"),                      # padding the kernel skips
    (CPIO_NEWC + gzip.compress(b"x" * 1000, mtime=0), "cpio"),  # Debian: microcode cpio first
    (gzip.compress(CPIO_NEWC, mtime=0), "gzip"),
    (lzma.compress(CPIO_NEWC, format=lzma.FORMAT_XZ), "xz"),
    (b"\x28\xb5\x2f\xfd" + b"\0" * 20, "zstd"),
    (b"\x02\x21\x4c\x18" + b"\0" * 20, "lz4"),
], ids=["newc", "crc", "padded", "microcode+gzip", "gzip", "xz", "zstd", "lz4"])
def test_initramfs_shapes_are_recognised(data, fmt):
    assert initramfs_format(data) == fmt
    check_initramfs(data, "initrd.img")


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


@pytest.mark.parametrize("method", ["classic", "file"])
def test_loader_refuses_a_garbage_initrd_before_any_syscall(tmp_path, method, debian_kernels):
    kernel = debian_kernels["6.1.0-56-amd64"].vmlinuz
    garbage = tmp_path / "initrd.img"
    garbage.write_bytes(os.urandom(1 << 16).replace(b"0707", b"xxxx"))
    if garbage.read_bytes()[:1] in (b"\x1f", b"\xfd", b"(", b"\x02", b"B", b"]", b"\x89", b"\0", b"\xc7", b"q"):
        garbage.write_bytes(b"G" + garbage.read_bytes()[1:])
    host = Host.read(os.path.join(os.path.dirname(__file__), "..", "fixtures", "sysroots", "lab-seabios-pc-1g"))
    fake = sc.FakeSyscalls()
    with pytest.raises(ImageFormatError, match="is not an initramfs"):
        loader.load(Request(kernel, str(garbage), "console=ttyS0", method=method), fake, host)
    assert fake.calls == []
