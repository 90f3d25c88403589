"""A plan made by the CLI for an arm64 host, booted as kexec would leave it: Debian's real 6.1
kernel, our device tree and our purgatory, on the QEMU virt machine whose tree the host shows.

kexec's relocation (copying each segment to its place, then jumping with the MMU off) is what
QEMU's generic loader stands in for: it puts every segment of the plan where the plan says and
starts the CPU at the plan's entry at EL1, MMU off.  What follows is the real thing: our
purgatory verifies the segments and enters the kernel, which reads our /chosen.  No root file
system is given, so the kernel stops with a panic, and panic=-1 makes QEMU exit at once.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from arm64_sysroot import need
from tests.unit.conftest import newc_initrd
from tests.kernels import KernelUnavailable, kernel_package

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(REPO, "bin", "fleetboot-kexec")
MEMORY_MB = 2048
#: Recorded from Debian's 6.1.0-54 booted on this very machine (-m 2048 -smp 2, crashkernel=256M).
RECORDED = os.path.join(REPO, "tests", "fixtures", "sysroots", "qemu-arm64-virt-2g-crash")


@pytest.fixture(scope="module")
def kernel():
    try:
        return kernel_package("6.1.0-56-arm64")
    except KernelUnavailable as err:
        pytest.skip(str(err).splitlines()[0])


def boot(tmp_path, sysroot, kernel_file, initrd, append, env=None, timeout=180, until=None, extra=()):
    """Plan with the CLI, load the segments into a fresh virt machine, run it until QEMU exits, the
    console shows ``until`` or ``timeout`` passes; (plan, console, QEMU's exit status or None)."""
    need("qemu-system-aarch64")
    seg_dir = tmp_path / "segments"
    res = subprocess.run([sys.executable, CLI, "plan", "--json", "--method", "classic", "--sysroot", sysroot,
                          "--kernel", kernel_file, "--initrd", initrd, "--append", append,
                          "--save-segments", str(seg_dir)] + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, check=False, env=dict(os.environ, **(env or {})))
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    log = tmp_path / "console.log"
    args = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-m", str(MEMORY_MB), "-smp", "2",
            "-nographic", "-no-reboot", "-monitor", "none", "-serial", "file:%s" % log]
    for seg in plan["segments"]:
        args += ["-device", "loader,file=%s,addr=%#x,force-raw=on" % (seg["file"], seg["mem"])]
    args += ["-device", "loader,addr=%#x,cpu-num=0" % plan["entry"]]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
            if until and log.exists() and until.encode() in log.read_bytes():
                time.sleep(2)  # anything printed after it (a kernel that should not start) shows too
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    status = proc.returncode if proc.returncode >= 0 else None  # None: we stopped it
    return plan, log.read_bytes().decode("utf-8", "replace"), status


@pytest.fixture(scope="module")
def host():
    return RECORDED


def test_debian_kernel_boots_from_our_plan(tmp_path, host, kernel):
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(newc_initrd(1 << 20, name="fleetboot-marker"))
    append = "console=ttyAMA0 panic=-1 fleetboot.test=1"
    plan, console, status = boot(tmp_path, host, kernel.vmlinuz, str(initrd), append)
    assert "Linux version 6.1.0-" in console, console[-3000:]
    assert "Kernel command line: %s" % append in console  # our /chosen/bootargs
    assert "Unpacking initramfs" in console or "Freeing initrd memory" in console  # our linux,initrd-*
    # Our kaslr-seed: the kernel randomized itself ("KASLR disabled due to lack of seed" otherwise).
    assert "KASLR enabled" in console and "KASLR disabled" not in console
    # Our rng-seed: the RNG is ready at time zero, before anything needs randomness.
    assert "[    0.000000] random: crng init done" in console
    assert "Kernel panic - not syncing" in console and status == 0  # panic=-1 under -no-reboot: QEMU exits
    dtb = [s for s in plan["segments"] if s["what"] == "dtb"][0]
    assert "Machine model: linux,dummy-virt" in console
    assert dtb["mem"] % 8 == 0


def test_a_damaged_kernel_never_starts(tmp_path, host, kernel):
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(newc_initrd(4096))
    _plan, console, status = boot(tmp_path, host, kernel.vmlinuz, str(initrd), "console=ttyAMA0 panic=-1",
                                  env={"FLEETBOOT_TEST_CORRUPT_SEGMENT": "initrd"}, timeout=60, until="refusing to boot")
    assert "fleetboot purgatory: sha256 mismatch in segment 1, refusing to boot" in console
    assert "Linux version" not in console and status is None  # still running when stopped: halted


def test_a_capture_kernel_takes_its_core_header_and_memory_from_our_tree(tmp_path, kernel, host):
    with open(os.path.join(host, "proc", "iomem")) as f:
        line = [l for l in f if l.strip().endswith(": Crash kernel")][0]
    crash = [int(v, 16) for v in line.split(":")[0].strip().split("-")]
    crash[1] += 1
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(newc_initrd(4096))
    plan, console, status = boot(tmp_path, host, kernel.vmlinuz, str(initrd), "console=ttyAMA0 panic=-1",
                                 extra=["--crash", "--capture-options", ""])
    hdr = [s for s in plan["segments"] if s["what"] == "elfcorehdr"][0]
    assert all(crash[0] <= s["mem"] < crash[1] for s in plan["segments"])
    assert "Kernel command line: console=ttyAMA0 panic=-1" in console, console[-3000:]
    # linux,elfcorehdr: reserved where we put it (drivers/of/fdt.c fdt_reserve_elfcorehdr()).
    assert ("at 0x%x for elfcorehdr" % hdr["mem"]) in console and "elfcorehdr is overlapped" not in console
    # linux,usable-memory-range: the kernel caps its memory to the crash region.
    memory = [line for line in console.splitlines() if "Memory: " in line and "available" in line]
    assert memory and int(memory[0].split("/")[1].split("K")[0]) * 1024 == crash[1] - crash[0], memory
    # (/proc/vmcore itself stays down here: no crashed kernel ever wrote the notes in this fresh RAM.)
    assert "Kernel panic - not syncing" in console and status == 0
