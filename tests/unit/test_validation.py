"""Nothing bad gets past the loader: the same checks for every method, bounded inputs, and a
message that says what to do for every refusal.  Everything runs through the CLI in-process (as a
user would call it), with FakeSyscalls: an internal error is exit 3 and must never happen."""

import io
import os
import shutil
import stat
import struct
import threading

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import cli
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as sc
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import pe

from tests.unit.conftest import newc_initrd  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")
METHODS = ("classic", "file")


def run(argv, timeout=30):
    """cli.main in a thread with a deadline: (rc, out, err, syscalls made).  A hang fails the test."""
    out, err, fake = io.StringIO(), io.StringIO(), sc.FakeSyscalls()
    result = {}

    def target():
        result["rc"] = cli.main(argv, syscalls=fake, environ={}, out=out, err=err)
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the loader hung on %r" % (argv,)
    return result["rc"], out.getvalue(), err.getvalue(), fake.calls


def copy_sysroot(tmp_path, name="lab-seabios-pc-2g-crash"):
    dst = tmp_path / name
    shutil.copytree(os.path.join(SYSROOTS, name), str(dst))
    return str(dst)


@pytest.fixture(scope="module")
def kernel(debian_kernels):
    return debian_kernels["6.1.0-56-amd64"].vmlinuz


@pytest.fixture
def initrd(tmp_path):
    path = tmp_path / "initrd.img"
    path.write_bytes(newc_initrd(1 << 20))
    return str(path)


def refused(argv, *needles):
    rc, out, err, calls = run(argv)
    assert rc == 1, (rc, out, err)
    assert calls == []
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# -- the file method checks what the classic one checks ---------------------------------------------

def _truncated(data):
    return data[:len(data) // 3]


def _flipped_setup_sects(data):
    data = bytearray(data)
    data[0x1F1] = 0x7F  # setup code now "ends" inside the compressed payload
    return bytes(data)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("damage,needle", [
    (_truncated, "truncated"),  # and the advice, checked below
    (_flipped_setup_sects, "the kernel file is damaged"),
    (lambda d: os.urandom(len(d)), "unrecognised kernel image"),
    (lambda d: newc_initrd(4096), "unrecognised kernel image"),
], ids=["truncated", "setup-sects", "random", "an-initrd"])
def test_a_damaged_kernel_is_refused_by_every_method(tmp_path, kernel, initrd, method, damage, needle):
    bad = tmp_path / "vmlinuz"
    with open(kernel, "rb") as f:
        bad.write_bytes(damage(f.read()))
    err = refused(["load", "--dry-run", "--kernel", str(bad), "--initrd", initrd, "--method", method,
                   "--sysroot", os.path.join(SYSROOTS, "lab-seabios-pc-1g")], needle)
    assert "reinstall its package" in err or "pass the kernel" in err, err


def test_file_method_refuses_an_elf_vmlinux_which_kexec_file_load_does_not_take(tmp_path, kernel):
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64.bzimage import extract_vmlinux
    with open(kernel, "rb") as f:
        vmlinux = extract_vmlinux(f.read())
    path = tmp_path / "vmlinux"
    path.write_bytes(bytes(vmlinux))
    root = os.path.join(SYSROOTS, "lab-seabios-pc-1g")
    refused(["plan", "--kernel", str(path), "--method", "file", "--sysroot", root],
            "kexec_file_load on x86_64 takes bzImage", "use --method classic")
    rc, out, err, calls = run(["plan", "--kernel", str(path), "--method", "classic", "--sysroot", root])
    assert rc == 0, err


def _unsigned(kernel, tmp_path):
    """Debian's kernel with its certificate table removed from the PE header (what -unsigned is)."""
    with open(kernel, "rb") as f:
        data = bytearray(f.read())
    offset, size = pe.security_directory(data)
    pe_at = struct.unpack_from("<I", data, 0x3C)[0]
    entry = pe_at + 24 + 112 + 8 * pe.SECURITY_DIRECTORY
    assert struct.unpack_from("<II", data, entry) == (offset, size)
    struct.pack_into("<II", data, entry, 0, 0)
    path = tmp_path / "vmlinuz-unsigned"
    path.write_bytes(bytes(data[:offset]))
    assert not pe.is_signed(path.read_bytes())
    return str(path)


@pytest.mark.parametrize("lockdown", ["integrity", "confidentiality"])
def test_unsigned_kernel_on_a_locked_down_host_is_refused_before_the_syscall(tmp_path, kernel, initrd, lockdown):
    root = copy_sysroot(tmp_path)
    os.makedirs(os.path.join(root, "sys/kernel/security"), exist_ok=True)
    with open(os.path.join(root, "sys/kernel/security/lockdown"), "w") as f:
        f.write("none integrity confidentiality".replace(lockdown, "[%s]" % lockdown) + "\n")
    unsigned = _unsigned(kernel, tmp_path)
    # auto picks kexec_file_load under lockdown; so does --method file.
    for method in ("auto", "file"):
        refused(["load", "--dry-run", "--kernel", unsigned, "--initrd", initrd, "--method", method, "--sysroot", root],
                "carries no signature", "kernel lockdown (%s)" % lockdown, "signed kernel")
    # The signed one passes the check (the kernel still verifies the signature itself).
    rc, out, err, calls = run(["load", "--dry-run", "--kernel", kernel, "--initrd", initrd, "--sysroot", root])
    assert rc == 0 and calls == [], err
    # And the classic method is refused outright, with the reason status gives.
    refused(["plan", "--kernel", kernel, "--method", "classic", "--sysroot", root],
            "--method classic is refused on this host: kernel lockdown is %s" % lockdown)


@pytest.mark.parametrize("method", METHODS)
def test_command_line_rules_hold_for_every_method(tmp_path, kernel, initrd, method):
    root = os.path.join(SYSROOTS, "lab-seabios-pc-1g")
    base = ["plan", "--kernel", kernel, "--initrd", initrd, "--method", method, "--sysroot", root]
    refused(base + ["--append", "x" * 3000], "command line is 3000 bytes", "at most 2047")
    refused(base + ["--append", "quiet\0splash"], "NUL")
    refused(base + ["--append", "quiet \udcff"], "not valid UTF-8")


@pytest.mark.parametrize("method", METHODS)
def test_initrd_over_half_of_ram_is_refused_by_every_method(tmp_path, kernel, method):
    root = copy_sysroot(tmp_path, "lab-seabios-pc-1g")
    big = tmp_path / "big.img"
    big.write_bytes(newc_initrd(600 << 20))
    refused(["plan", "--kernel", kernel, "--initrd", str(big), "--method", method, "--sysroot", root],
            "more than half of RAM")


def test_crash_rules_hold_for_the_file_method(tmp_path, kernel):
    root = os.path.join(SYSROOTS, "lab-seabios-pc-2g-crash")
    big = tmp_path / "big.img"
    big.write_bytes(newc_initrd(300 << 20))
    refused(["plan", "--crash", "--kernel", kernel, "--initrd", str(big), "--method", "file", "--sysroot", root],
            "does not fit the crash region", "crashkernel=")


# -- inputs are regular files of sane sizes ---------------------------------------------------------

@pytest.mark.parametrize("what", ["kernel", "initrd"])
def test_a_fifo_is_refused_at_once(tmp_path, kernel, initrd, what):
    fifo = tmp_path / "fifo"
    os.mkfifo(str(fifo))
    args = {"kernel": kernel, "initrd": initrd}
    args[what] = str(fifo)
    refused(["plan", "--kernel", args["kernel"], "--initrd", args["initrd"],
             "--sysroot", os.path.join(SYSROOTS, "lab-seabios-pc-1g")], "is a FIFO, not a regular file")


@pytest.mark.parametrize("rel", ["proc/iomem", "proc/cmdline", "proc/meminfo", "sys/devices/system/cpu/possible"])
def test_a_fifo_in_a_sysroot_is_refused_not_waited_for(tmp_path, kernel, rel):
    root = copy_sysroot(tmp_path)
    path = os.path.join(root, rel)
    os.unlink(path)
    os.mkfifo(path)
    refused(["plan", "--crash", "--kernel", kernel, "--sysroot", root], "is a FIFO, not a regular file", "record")


def test_an_endless_proc_cmdline_is_refused_by_its_size(tmp_path, kernel):
    root = copy_sysroot(tmp_path)
    with open(os.path.join(root, "proc/cmdline"), "wb") as f:
        f.truncate(1 << 30)  # sparse: a gigabyte of command line
    refused(["plan", "--kernel", kernel, "--reuse-cmdline", "--sysroot", root], "holds more than", "proc/cmdline")


def test_a_kernel_larger_than_ram_is_refused_by_its_size(tmp_path, initrd):
    sparse = tmp_path / "vmlinuz"
    with open(str(sparse), "wb") as f:
        f.truncate(64 << 30)
    err = refused(["plan", "--kernel", str(sparse), "--sysroot", os.path.join(SYSROOTS, "lab-seabios-pc-1g")],
                  "65536.0 MiB", "more than this host could load")
    assert "Cannot allocate memory" not in err


@pytest.mark.parametrize("text,needle", [
    ("MemTotal:              0 kB\n", "MemTotal is 0 kB"),
    ("MemTotal: lots\n", "malformed MemTotal"),
])
def test_a_corrupt_meminfo_says_so_once(tmp_path, kernel, text, needle):
    root = copy_sysroot(tmp_path)
    with open(os.path.join(root, "proc/meminfo"), "w") as f:
        f.write(text)
    err = refused(["plan", "--kernel", kernel, "--sysroot", root], needle)
    assert err.count("kernel") < 3


def test_a_recording_without_osrelease_is_told_to_record_again(tmp_path, kernel):
    root = copy_sysroot(tmp_path)
    os.unlink(os.path.join(root, "proc/sys/kernel/osrelease"))
    err = refused(["plan", "--kernel", kernel, "--sysroot", root], "not a complete host recording",
                  "record_sysroot.sh")
    assert "is /proc mounted" not in err


@pytest.mark.parametrize("rel,text,needle", [
    ("sys/devices/system/cpu/possible", "0-4294967295\n", "more CPUs than Linux supports"),
    ("sys/kernel/vmcoreinfo", "1000 ffffffffffffffff\n", "vmcoreinfo note is"),
    ("sys/devices/system/cpu/cpu0/crash_notes", "10000000000000000\n", "does not fit 64 bits"),
    ("proc/iomem", "00000000-ffffffffffffffff : System RAM\n  6d000000-7cffffff : Crash kernel\n", None),
])
def test_numbers_from_the_host_are_checked_before_they_are_packed(tmp_path, kernel, rel, text, needle):
    root = copy_sysroot(tmp_path)
    with open(os.path.join(root, rel), "w") as f:
        f.write(text)
    rc, out, err, calls = run(["plan", "--crash", "--kernel", kernel, "--sysroot", root])
    assert rc in (0, 1), err  # never 3: a number that does not fit is the recording's fault, said so
    assert calls == []
    if needle:
        assert rc == 1 and needle in err, err


def test_non_utf8_capture_options_are_refused(tmp_path, kernel):
    root = os.path.join(SYSROOTS, "lab-seabios-pc-2g-crash")
    refused(["plan", "--crash", "--kernel", kernel, "--capture-options", "nr_cpus=1 \udcfe", "--sysroot", root],
            "not valid UTF-8")


def test_a_directory_or_device_as_kernel_says_what_it_is(tmp_path):
    root = os.path.join(SYSROOTS, "lab-seabios-pc-1g")
    refused(["plan", "--kernel", str(tmp_path), "--sysroot", root], "is a directory")
    refused(["plan", "--kernel", "/dev/null", "--sysroot", root], "is a character device")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
