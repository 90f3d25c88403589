"""digest.py: chunked sha256 that gives mapped file pages back must still hash the right bytes."""

import hashlib
import mmap
import os

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import digest


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "initrd.img"
    data = os.urandom(3 * digest.CHUNK + 12345)  # several chunks and a ragged tail
    path.write_bytes(data)
    return str(path), data


def test_private_mapping_hashes_like_hashlib_and_stays_readable(big_file):
    path, data = big_file
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    try:
        assert digest.sha256_hex(m) == hashlib.sha256(data).hexdigest()
        # Pages given back with MADV_DONTNEED fault in again with the file's bytes.
        assert m[:64] == data[:64] and m[-64:] == data[-64:]
        assert digest.sha256_hex(m) == hashlib.sha256(data).hexdigest()
    finally:
        m.close()


def test_unaligned_views_and_lengths(big_file):
    path, data = big_file
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    view = memoryview(m)[4097:]
    try:
        assert digest.sha256_hex(view) == hashlib.sha256(data[4097:]).hexdigest()
        assert digest.sha256_hex(view, 5 * 4096 + 7) == hashlib.sha256(data[4097:4097 + 5 * 4096 + 7]).hexdigest()
        assert digest.sha256_hex(view, 10 ** 12) == hashlib.sha256(data[4097:]).hexdigest()
    finally:
        view.release()
        m.close()  # no export left behind: the mapping closes


def test_several_hashers_and_other_buffers():
    data = bytes(range(256)) * 50000
    a, b = hashlib.sha256(), hashlib.sha1()
    digest.update((a, b), bytearray(data))
    assert a.digest() == hashlib.sha256(data).digest() and b.digest() == hashlib.sha1(data).digest()
    assert digest.sha256_hex(memoryview(data).cast("I")) == hashlib.sha256(data).hexdigest()
    assert digest.sha256_hex(None) == hashlib.sha256(b"").hexdigest()
    assert digest.sha256_hex(b"") == hashlib.sha256(b"").hexdigest()
