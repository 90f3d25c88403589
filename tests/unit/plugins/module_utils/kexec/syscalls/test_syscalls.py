"""The syscall layer: kernel ABI constants and struct layout, marshalling, the recording fake,
and errno -> message mapping.  No real kexec/reboot syscall is ever issued here."""

import ctypes
import errno
import hashlib
import mmap
import os

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as sc
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import (
    KexecError, SignatureError, SyscallError)


class Seg:
    def __init__(self, buf, mem, memsz=None, bufsz=None):
        self.buf, self.mem = buf, mem
        self.bufsz = len(buf) if bufsz is None and buf is not None else (bufsz or 0)
        self.memsz = memsz if memsz is not None else self.bufsz


# -- ABI ------------------------------------------------------------------------------------------

def test_kexec_segment_struct_matches_kernel_abi():
    word = ctypes.sizeof(ctypes.c_void_p)
    assert ctypes.sizeof(sc.KexecSegment) == 4 * word
    assert [getattr(sc.KexecSegment, f).offset for f in ("buf", "bufsz", "mem", "memsz")] == [0, word, 2 * word, 3 * word]
    assert [getattr(sc.KexecSegment, f).size for f in ("buf", "bufsz", "mem", "memsz")] == [word] * 4
    if word == 8:
        assert ctypes.sizeof(sc.KexecSegment) == 32


def test_flag_and_magic_values():
    assert sc.KEXEC_ARCH_X86_64 == 62 << 16 == 0x3E0000
    assert sc.KEXEC_ARCH_AARCH64 == 183 << 16
    assert sc.KEXEC_ARCH_PPC64 == 21 << 16
    assert (sc.KEXEC_ON_CRASH, sc.KEXEC_PRESERVE_CONTEXT) == (1, 2)
    assert (sc.KEXEC_FILE_UNLOAD, sc.KEXEC_FILE_ON_CRASH, sc.KEXEC_FILE_NO_INITRAMFS) == (1, 2, 4)
    assert sc.LINUX_REBOOT_MAGIC1 == 0xFEE1DEAD
    assert sc.LINUX_REBOOT_MAGIC2 == 672274793 == 0x28121969
    assert sc.LINUX_REBOOT_CMD_KEXEC == 0x45584543
    assert sc.KEXEC_SEGMENT_MAX == 16


@pytest.mark.parametrize("arch,numbers", [
    ("x86_64", (246, 320, 169)), ("amd64", (246, 320, 169)),
    ("aarch64", (104, 294, 142)), ("arm64", (104, 294, 142)),
    ("ppc64le", (268, 382, 88)), ("s390x", (277, 381, 88)),
])
def test_syscall_numbers(arch, numbers):
    s = sc.CtypesSyscalls(arch)
    assert (s.nr_kexec_load, s.nr_kexec_file_load, s.nr_reboot) == numbers


def test_arch_flags():
    assert sc.kexec_arch_flag("x86_64") == sc.KEXEC_ARCH_X86_64
    assert sc.kexec_arch_flag("arm64") == sc.KEXEC_ARCH_AARCH64
    assert sc.kexec_arch_flag("ppc64le") == sc.KEXEC_ARCH_PPC64
    assert sc.kexec_arch_flag("mystery") == sc.KEXEC_ARCH_DEFAULT


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(SyscallError, match="not known for architecture 'vax'"):
        sc.CtypesSyscalls("vax")


# -- ctypes marshalling (no syscall: _call is replaced) --------------------------------------------

def test_ctypes_kexec_load_marshals_segments_without_copying(tmp_path, monkeypatch):
    path = tmp_path / "k"
    data = os.urandom(10000)
    path.write_bytes(data)
    fd = os.open(str(path), os.O_RDONLY)
    m = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
    seen = {}

    def fake_call(self, nr, *args):
        arr = args[2]._obj
        n = args[1].value
        seen["nr"], seen["entry"], seen["flags"] = nr, args[0].value, args[3].value
        seen["segs"] = [(ctypes.string_at(arr[i].buf, arr[i].bufsz) if arr[i].bufsz else None,
                         arr[i].bufsz, arr[i].mem, arr[i].memsz, arr[i].buf) for i in range(n)]
        return errno.EBUSY

    monkeypatch.setattr(sc.CtypesSyscalls, "_call", fake_call)
    s = sc.CtypesSyscalls("x86_64")
    small = bytearray(b"boot params")
    immutable = b"purgatory bytes"
    readonly = memoryview(b"read only view")
    view = memoryview(m)[100:]
    try:
        s.kexec_load(0x1000, [Seg(view, 0x100000, 0x3000), Seg(small, 0x2000, 0x1000),
                              Seg(immutable, 0x5000, 0x1000), Seg(readonly, 0x7000, 0x1000),
                              Seg(None, 0x9000, 0x1000)], sc.KEXEC_ARCH_X86_64)
    except SyscallError as e:
        assert e.errno == errno.EBUSY
    else:
        raise AssertionError("EBUSY expected")
    assert seen["nr"] == 246 and seen["entry"] == 0x1000 and seen["flags"] == sc.KEXEC_ARCH_X86_64
    segs = seen["segs"]
    assert segs[0][:4] == (data[100:], 9900, 0x100000, 0x3000)
    # The mmap segment points into the mapping itself (no copy was made).
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert segs[0][4] == base + 100
    assert segs[1][0] == b"boot params"
    assert segs[1][4] == ctypes.addressof(ctypes.c_char.from_buffer(small))
    assert segs[2][0] == immutable
    assert segs[3][0] == b"read only view"
    assert segs[4][:2] == (None, 0) and segs[4][4] is None
    # Every export the syscall layer took was released: the view and the mapping close.
    view.release()
    small.append(0)  # a bytearray with a live export cannot resize
    m.close()
    os.close(fd)


def test_ctypes_kexec_file_load_and_reboot_marshalling(monkeypatch):
    calls = []

    def fake_call(self, nr, *args):
        calls.append((nr, args))
        return 0

    monkeypatch.setattr(sc.CtypesSyscalls, "_call", fake_call)
    monkeypatch.setattr(sc.CtypesSyscalls, "_libc_sync", lambda self: calls.append("sync"))
    s = sc.CtypesSyscalls("x86_64")
    s.kexec_file_load(7, 8, "root=/dev/vda ro", 0)
    nr, args = calls[0]
    assert nr == 320 and args[0].value == 7 and args[1].value == 8
    assert args[2].value == len("root=/dev/vda ro") + 1  # the NUL counts
    assert ctypes.string_at(args[3].value) == b"root=/dev/vda ro"
    s.kexec_file_load(7, -1, "", 0)
    nr, args = calls[1]
    assert args[1].value == -1 and args[2].value == 0 and args[3].value is None
    assert args[4].value == sc.KEXEC_FILE_NO_INITRAMFS
    s.reboot_kexec()
    assert calls[2] == "sync"  # file systems are flushed before the jump
    nr, args = calls[3]
    assert nr == 169 and [a.value for a in args[:3]] == [0xFEE1DEAD, 672274793, 0x45584543]


def test_ctypes_unload_variants(monkeypatch):
    calls = []
    monkeypatch.setattr(sc.CtypesSyscalls, "_call", lambda self, nr, *a: calls.append((nr, a)) or 0)
    s = sc.CtypesSyscalls("x86_64")
    s.unload(crash=True)
    nr, a = calls[0]
    assert nr == 246 and a[0].value == 0 and a[1].value == 0 and a[2].value is None
    assert a[3].value == sc.KEXEC_ARCH_X86_64 | sc.KEXEC_ON_CRASH
    s.unload(method="file")
    nr, a = calls[1]
    assert nr == 320 and a[0].value == -1 and a[4].value == sc.KEXEC_FILE_UNLOAD


# -- the fake --------------------------------------------------------------------------------------

def test_fake_records_segments_as_plain_values():
    f = sc.FakeSyscalls()
    buf = bytearray(b"x" * 5000)
    f.kexec_load(0x7000, [Seg(buf, 0x100000, 0x2000), Seg(b"abc", 0x5000, 0x1000, bufsz=2)],
                 sc.KEXEC_ARCH_X86_64)
    assert f.calls == [{
        "call": "kexec_load", "entry": 0x7000, "flags": sc.KEXEC_ARCH_X86_64,
        "segments": [
            {"mem": 0x100000, "memsz": 0x2000, "bufsz": 5000, "sha256": hashlib.sha256(bytes(buf)).hexdigest()},
            {"mem": 0x5000, "memsz": 0x1000, "bufsz": 2, "sha256": hashlib.sha256(b"ab").hexdigest()},
        ]}]
    assert f.loaded == {"normal": True, "crash": False}
    f.unload()
    assert f.calls[-1] == {"call": "kexec_load", "entry": 0, "flags": sc.KEXEC_ARCH_X86_64, "segments": []}
    assert f.loaded["normal"] is False


def test_fake_kexec_file_load_hashes_the_files(tmp_path):
    k = tmp_path / "k"
    k.write_bytes(b"kernel" * 1000)
    fd = os.open(str(k), os.O_RDONLY)
    try:
        f = sc.FakeSyscalls()
        f.kexec_file_load(fd, -1, "quiet", sc.KEXEC_FILE_ON_CRASH)
    finally:
        os.close(fd)
    assert f.calls == [{"call": "kexec_file_load", "flags": sc.KEXEC_FILE_ON_CRASH | sc.KEXEC_FILE_NO_INITRAMFS,
                        "cmdline": "quiet", "kernel_sha256": hashlib.sha256(b"kernel" * 1000).hexdigest(),
                        "initrd_sha256": None}]
    assert f.loaded["crash"] is True
    f.unload(crash=True, method="file")
    assert f.calls[-1]["flags"] == sc.KEXEC_FILE_UNLOAD | sc.KEXEC_FILE_ON_CRASH
    assert f.loaded["crash"] is False


def test_fake_fail_and_times():
    f = sc.FakeSyscalls().fail("kexec_load", errno.EBUSY, times=1)
    with pytest.raises(SyscallError) as ei:
        f.kexec_load(0, [Seg(b"a", 0x1000)], 0)
    assert ei.value.errno == errno.EBUSY and f.calls[0]["errno"] == errno.EBUSY
    assert f.loaded["normal"] is False
    f.kexec_load(0, [Seg(b"a", 0x1000)], 0)  # only failed once
    assert "errno" not in f.calls[1]


def test_fake_reboot_with_nothing_loaded_is_einval():
    f = sc.FakeSyscalls()
    with pytest.raises(SyscallError, match="no kexec image is loaded; run `load` first") as ei:
        f.reboot_kexec()
    assert ei.value.errno == errno.EINVAL
    f.kexec_load(0x1000, [Seg(b"a", 0x1000)], sc.KEXEC_ARCH_X86_64)
    f.reboot_kexec()
    assert f.calls[-1] == {"call": "reboot", "cmd": sc.LINUX_REBOOT_CMD_KEXEC}


def test_nul_in_cmdline_is_refused_before_the_call():
    f = sc.FakeSyscalls()
    with pytest.raises(SyscallError, match="NUL"):
        f.kexec_file_load(3, -1, "a\0b", 0)
    assert f.calls == []


def test_segment_values_catch_inconsistent_segments():
    with pytest.raises(SyscallError, match="exceeds its buffer"):
        sc.segment_values(Seg(b"ab", 0x1000, 0x1000, bufsz=3))


# -- errno -> message ------------------------------------------------------------------------------

ADVICE = ("use ", "boot ", "run ", "wait", "free ", "check", "reboot", "report", "disable", "remove",
          "pass ", "sudo")


@pytest.mark.parametrize("op", ["kexec_load", "kexec_file_load"])
@pytest.mark.parametrize("err", [errno.EPERM, errno.EBUSY, errno.ENOMEM, errno.EINVAL, errno.EADDRNOTAVAIL,
                                 errno.ENOEXEC, errno.ENOSYS, sc.EOPNOTSUPP, sc.EKEYREJECTED, sc.ENOKEY,
                                 sc.EBADMSG, sc.EKEYREVOKED, sc.EKEYEXPIRED, sc.ENODATA, errno.EBADF,
                                 errno.EFAULT, errno.EFBIG, errno.EIO])
def test_every_errno_message_names_it_and_says_what_to_do(op, err):
    e = sc.error_for(op, err, host=None, euid=0)
    assert isinstance(e, SyscallError) and isinstance(e, KexecError)
    assert e.errno == err
    msg = str(e)
    assert msg.startswith(op + " failed: ") and errno.errorcode[err] in msg
    assert any(word in msg.lower() for word in ADVICE), msg


def test_specific_messages():
    assert "crashkernel=" in str(sc.error_for("kexec_load", errno.EADDRNOTAVAIL, euid=0))
    assert "already" in str(sc.error_for("kexec_load", errno.EBUSY, euid=0)) or \
        "in progress" in str(sc.error_for("kexec_load", errno.EBUSY, euid=0))
    assert "CONFIG_KEXEC_FILE" in str(sc.error_for("kexec_file_load", errno.ENOSYS, euid=0))
    assert "--method file" in str(sc.error_for("kexec_load", errno.ENOSYS, euid=0))
    assert "memory" in str(sc.error_for("kexec_load", errno.ENOMEM, euid=0))


@pytest.mark.parametrize("err", sorted(sc.SIGNATURE_ERRNOS))
def test_signature_errnos_are_signature_errors(err):
    e = sc.error_for("kexec_file_load", err, euid=0)
    assert isinstance(e, SignatureError) and isinstance(e, SyscallError)
    assert "signed" in str(e) and "lockdown" in str(e)


def test_eperm_says_which_rule_refused():
    msg = str(sc.error_for("kexec_load", errno.EPERM, euid=1000))
    assert "not running as root" in msg
    msg = str(sc.error_for("kexec_load", errno.EPERM, host={"kexec_load_disabled": True}, euid=0))
    assert "kexec_load_disabled" in msg and "until the next reboot" in msg
    e = sc.error_for("kexec_load", errno.EPERM, host={"lockdown": "integrity"}, euid=0)
    assert "lockdown (integrity) forbids kexec_load" in str(e) and "--method file" in str(e)
    assert not isinstance(e, SignatureError)
    e = sc.error_for("kexec_file_load", errno.EPERM, host={"lockdown": "none [integrity] confidentiality"}, euid=0)
    assert isinstance(e, SignatureError) and "signed kernel" in str(e)
    msg = str(sc.error_for("kexec_load", errno.EPERM, host={"lockdown": "none", "secure_boot": True}, euid=0))
    assert "Secure Boot" in msg
    msg = str(sc.error_for("kexec_load", errno.EPERM, host=None, euid=0))
    assert "lockdown" in msg and "kexec_load_disabled" in msg


def test_syscalls_use_their_host_for_messages():
    f = sc.FakeSyscalls(host={"lockdown": "confidentiality"}).fail("kexec_load", errno.EPERM)
    if os.geteuid() != 0:
        pytest.skip("message depends on running as root")
    with pytest.raises(SyscallError, match="confidentiality"):
        f.kexec_load(0, [Seg(b"a", 0x1000)], 0)


def test_call_plumbing_with_harmless_syscalls(monkeypatch):
    """libc syscall() and errno through ctypes, with getpid and close(-1): never kexec or reboot."""
    import platform
    if sc.normalize_arch(platform.machine()) != "x86_64":
        pytest.skip("syscall numbers below are x86_64's")
    monkeypatch.undo()  # lift the guard for this test only; the numbers are fixed below
    s = sc.CtypesSyscalls("x86_64")
    assert s._call(39) == 0  # getpid
    assert s._call(3, ctypes.c_long(-1)) == errno.EBADF  # close(-1)
