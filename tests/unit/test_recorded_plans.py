"""`fleetboot-kexec plan --json` on the sysroots recorded from lab VMs, checked independently.

The checks below re-read the recorded firmware memory map and /proc/iomem with code of their own
(not the planner's) and apply the rules of the kernel's sanity_check_segment_list and the x86_64
limits to the JSON the CLI prints: what the kernel would refuse must never leave the planner.
"""

import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import newc_initrd  # noqa: E402  (tests/unit/conftest.py, on sys.path under pytest)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(REPO, "bin", "fleetboot-kexec")
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")


def _machine(path):
    with open(os.path.join(path, "machine")) as f:
        return f.read().strip()


RECORDED = sorted(p for p in glob.glob(os.path.join(SYSROOTS, "lab-*")) if _machine(p) == "x86_64")
PAGE = 4096
KEXEC_SEGMENT_MAX = 16
X86_64_DESTINATION_LIMIT = (1 << 46) - 1  # MAXMEM - 1 with 4-level paging


def ram_ranges(sysroot):
    """[start, end) of every System RAM range in the recorded /sys/firmware/memmap."""
    out = []
    for entry in glob.glob(os.path.join(sysroot, "sys", "firmware", "memmap", "*")):
        def read(name):
            with open(os.path.join(entry, name)) as f:
                return f.read().strip()
        if read("type") == "System RAM":
            out.append((int(read("start"), 16), int(read("end"), 16) + 1))
    return sorted(out)


def crash_region(sysroot):
    with open(os.path.join(sysroot, "proc", "iomem")) as f:
        for line in f:
            if line.strip().endswith(": Crash kernel"):
                lo, hi = line.split(":")[0].strip().split("-")
                return int(lo, 16), int(hi, 16) + 1
    return None


def plan(sysroot, kernel, initrd, *extra):
    res = subprocess.run([sys.executable, CLI, "plan", "--json", "--method", "classic",
                          "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0",
                          "--sysroot", sysroot] + list(extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def assert_kernel_would_accept(report, ram, window=None):
    segs = report["segments"]
    assert 0 < len(segs) <= KEXEC_SEGMENT_MAX
    total = 0
    for s in segs:
        assert s["mem"] % PAGE == 0 and s["memsz"] % PAGE == 0, s
        assert s["bufsz"] <= s["memsz"], s
        assert s["mem"] + s["memsz"] - 1 <= X86_64_DESTINATION_LIMIT, s
        assert any(lo <= s["mem"] and s["mem"] + s["memsz"] <= hi for lo, hi in ram), s
        if window:
            assert window[0] <= s["mem"] and s["mem"] + s["memsz"] <= window[1], s
        assert len(s["sha256"]) == 64
        total += s["memsz"]
    ordered = sorted(segs, key=lambda s: s["mem"])
    for a, b in zip(ordered, ordered[1:]):
        assert a["mem"] + a["memsz"] <= b["mem"], (a, b)  # no overlap
    assert total <= sum(hi - lo for lo, hi in ram) // 2
    purgatory = [s for s in segs if s["what"] == "purgatory"]
    assert len(purgatory) == 1
    assert purgatory[0]["mem"] <= report["entry"] < purgatory[0]["mem"] + purgatory[0]["memsz"]


@pytest.fixture(scope="module")
def inputs(debian_kernels, tmp_path_factory):
    initrd = tmp_path_factory.mktemp("initrd") / "initrd.img"
    initrd.write_bytes(newc_initrd(30 << 20))  # Debian's initrd size
    return debian_kernels["6.1.0-56-amd64"].vmlinuz, str(initrd)


def test_recordings_exist():
    names = [os.path.basename(p) for p in RECORDED]
    assert names == ["lab-ovmf-pc-1g", "lab-ovmf-pc-2g-crash", "lab-seabios-pc-1g", "lab-seabios-pc-2g-crash"]


@pytest.mark.parametrize("sysroot", RECORDED, ids=os.path.basename)
def test_normal_plan_passes_every_kernel_check(sysroot, inputs):
    report = plan(sysroot, *inputs)
    assert report["method"] == "classic" and report["kind"] == "normal"
    assert {s["what"] for s in report["segments"]} == {"boot_params", "kernel", "initrd", "purgatory"}
    assert_kernel_would_accept(report, ram_ranges(sysroot))


@pytest.mark.parametrize("sysroot", [p for p in RECORDED if p.endswith("-crash")], ids=os.path.basename)
def test_crash_plan_stays_inside_the_crash_region(sysroot, inputs):
    region = crash_region(sysroot)
    assert region is not None and region[1] - region[0] == 256 << 20  # crashkernel=256M
    report = plan(sysroot, *inputs, "--crash")
    assert report["kind"] == "crash"
    assert_kernel_would_accept(report, ram_ranges(sysroot), window=region)


@pytest.mark.parametrize("sysroot", [p for p in RECORDED if not p.endswith("-crash")], ids=os.path.basename)
def test_crash_plan_without_a_crash_region_is_refused_with_advice(sysroot, inputs):
    kernel, initrd = inputs
    res = subprocess.run([sys.executable, CLI, "plan", "--crash", "--kernel", kernel, "--initrd", initrd,
                          "--sysroot", sysroot], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "crashkernel=" in res.stderr, res.stderr
