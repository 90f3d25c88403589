"""Fuzzing the loader as a hostile or careless user would: damaged kernels and initrds, odd command
lines, broken recorded host trees, through `plan` and `load --dry-run`.

Fixed seeds and a fixed number of cases (FLEETBOOT_FUZZ_CASES per shard, default 150): the same
cases run every time, on any machine, however slow (a time budget made the count depend on the
machine's load: CI once ran a single case).  For every case: an exit status of 0 or 1
(never 3, "a bug in the loader"), no traceback, no hang (each case has a deadline), bounded Python
memory (tracemalloc's peak), and never a syscall.
"""

import io
import os
import random
import shutil
import threading
import tracemalloc
import zlib

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import cli
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as sc

from tests.unit.conftest import newc_initrd  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")
CASES = int(os.environ.get("FLEETBOOT_FUZZ_CASES", "150"))
DEADLINE = 60.0          # seconds for one case: a hang, not a slow machine (a plan takes well under a second)
MEMORY = 256 << 20       # peak Python allocations for one case
SHARDS = 4


def run_case(argv):
    out, err, fake = io.StringIO(), io.StringIO(), sc.FakeSyscalls()
    result = {}

    def target():
        tracemalloc.start()
        try:
            result["rc"] = cli.main(argv, syscalls=fake, environ={}, out=out, err=err)
        except SystemExit as e:  # argparse: usage errors
            result["rc"] = e.code
        finally:
            result["peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(DEADLINE)
    assert not t.is_alive(), "hang: %r" % (argv,)
    return result["rc"], out.getvalue(), err.getvalue(), fake.calls, result["peak"]


# -- mutators -----------------------------------------------------------------------------------

def noise(rng, n):
    """n bytes from the seeded generator, so that a failing case can be run again."""
    return rng.getrandbits(8 * n).to_bytes(n, "little")


def mutate_bytes(rng, data):
    data = bytearray(data)
    kind = rng.randrange(7)
    if kind == 0:
        return bytes(data[:rng.randrange(len(data) + 1)])
    if kind == 1:  # flip bytes in the first 64 KiB (headers live there)
        for dummy in range(rng.randrange(1, 16)):
            i = rng.randrange(min(len(data), 65536))
            data[i] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 2:  # a random 64-bit field somewhere in the first 4 KiB
        i = rng.randrange(0, min(len(data), 4096) - 8)
        data[i:i + 8] = rng.choice([b"\xff" * 8, b"\0" * 8, noise(rng, 8), (1 << 63).to_bytes(8, "little")])
        return bytes(data)
    if kind == 3:
        return noise(rng, rng.randrange(1, 1 << 16))
    if kind == 4:
        return bytes(data) + noise(rng, rng.randrange(1, 4096))
    if kind == 5:  # a hole punched in the middle
        i = rng.randrange(len(data))
        return bytes(data[:i]) + bytes(rng.randrange(1, 65536)) + bytes(data[i:])
    return zlib.compress(bytes(data[:rng.randrange(1, 1 << 16)]))


def cmdline(rng):
    parts = ["root=/dev/vda", "console=ttyS0", "quiet", 'foo="a b"', "élan=ü", "crashkernel=256M",
             "elfcorehdr=0x1000", "=", '"', "a" * 5, "x" * rng.randrange(0, 300)]
    words = [rng.choice(parts) for dummy in range(rng.randrange(0, 6))]
    if rng.random() < 0.15:  # now and then something the kernel must not get
        words.append(rng.choice(["nul\0here", "bad\udcff", "x" * rng.randrange(2000, 5000)]))
    return " ".join(words)


SYSROOT_FILES = {
    "proc/iomem": [b"", b"garbage\n", b"00000000-ffffffffffffffff : System RAM\n",
                   b"00001000-0009ffff : System RAM\n  0000-zzzz : Kernel code\n", b"\xff\xfe",
                   b"0-1 : System RAM\n" * 50000],
    "proc/cmdline": [b"", b"\0\0\0", b"x" * 100000, b"\xff" * 10],
    "proc/meminfo": [b"", b"MemTotal: 0 kB\n", b"MemTotal: 18446744073709551616 kB\n", b"MemTotal:\n"],
    "sys/devices/system/cpu/possible": [b"0-4294967295\n", b"", b"a-b\n", b"3-1\n"],
    "sys/kernel/vmcoreinfo": [b"0 0\n", b"1000 ffffffffffffffff\n", b"zz\n", b""],
    "sys/devices/system/cpu/cpu0/crash_notes": [b"0\n", b"ffffffffffffffff\n", b"\n", b"10000000000000000\n"],
    "sys/firmware/memmap/0/end": [b"0\n", b"fffffffffffffffff\n", b"x\n"],
    "sys/kernel/security/lockdown": [b"[integrity]\n", b"none\n", b"[\n"],
    "proc/sys/kernel/kexec_load_disabled": [b"1\n", b"x\n", b"99999999999999999999999\n"],
    "machine": [b"aarch64\n", b"mips\n", b"\n", b"ppc64le\n"],
    "pagesize": [b"65536\n", b"12\n", b"0\n"],
    "sys/kernel/boot_params/data": [b"", noise(random.Random(109), 100), noise(random.Random(4096), 4096)],
}


def broken_sysroot(rng, tmp):
    base = rng.choice(["lab-seabios-pc-2g-crash", "lab-ovmf-pc-2g-crash", "seabios-q35-2g-crash", "ovmf-q35-2g"])
    root = os.path.join(tmp, "root")
    if os.path.exists(root):
        shutil.rmtree(root)
    shutil.copytree(os.path.join(SYSROOTS, base), root)
    for dummy in range(rng.randrange(1, 3)):
        rel = rng.choice(sorted(SYSROOT_FILES))
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        choice = rng.randrange(10)
        if choice == 0:
            os.mkfifo(path)
        elif choice == 1:
            continue  # missing
        else:
            with open(path, "wb") as f:
                f.write(rng.choice(SYSROOT_FILES[rel]))
    return root


def make_case(rng, tmp, kernel_bytes, good_initrd):
    """One CLI invocation: each input is good or broken by chance."""
    kernel = os.path.join(tmp, "vmlinuz")
    with open(kernel, "wb") as f:
        f.write(mutate_bytes(rng, kernel_bytes) if rng.random() < 0.6 else kernel_bytes)
    argv = [rng.choice(["plan", "load"])]
    if argv[0] == "load":
        argv.append("--dry-run")
    argv += ["--kernel", kernel, "--method", rng.choice(["auto", "classic", "file"])]
    if rng.random() < 0.8:
        initrd = os.path.join(tmp, "initrd.img")
        with open(initrd, "wb") as f:
            f.write(mutate_bytes(rng, good_initrd) if rng.random() < 0.5 else good_initrd)
        argv += ["--initrd", initrd]
    if rng.random() < 0.3:
        argv.append("--crash")
        if rng.random() < 0.3:
            argv += ["--capture-options", cmdline(rng)]
    if rng.random() < 0.5:
        argv.append("--reuse-cmdline")
    argv += ["--append", cmdline(rng)]
    root = broken_sysroot(rng, tmp) if rng.random() < 0.5 else os.path.join(SYSROOTS, "lab-seabios-pc-2g-crash")
    argv += ["--sysroot", root]
    if rng.random() < 0.5:
        argv.append("--json")
    return argv


@pytest.mark.parametrize("shard", range(SHARDS))
def test_hostile_inputs_never_crash_hang_or_reach_the_kernel(shard, debian_kernels, tmp_path):
    with open(debian_kernels["6.1.0-56-amd64"].vmlinuz, "rb") as f:
        kernel_bytes = f.read()
    good_initrd = newc_initrd(200000)
    rng = random.Random(20261202 + shard)
    outcomes = {0: 0, 1: 0}
    for dummy in range(CASES):
        argv = make_case(rng, str(tmp_path), kernel_bytes, good_initrd)
        rc, out, err, calls, peak = run_case(argv)
        assert rc in (0, 1), "exit %r for %r:\n%s" % (rc, argv, err)
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
        assert calls == [], (argv, calls)
        assert peak < MEMORY, "case used %d MiB of Python memory: %r" % (peak >> 20, argv)
        if rc == 1:
            # One or two lines: what was wrong, and what to do.
            assert err.startswith("fleetboot-kexec ") and err.count("\n") <= 4, err
        outcomes[rc] += 1
    # Both kinds of outcome happen: the generator makes good and bad inputs alike.
    assert outcomes[0] and outcomes[1], outcomes
