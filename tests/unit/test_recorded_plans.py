"""`fleetboot-kexec plan --json` on the sysroots recorded from lab VMs, checked independently.

The checks below re-read the recorded firmware memory map and /proc/iomem with code of their own
(not the planner's) and apply the rules of the kernel's sanity_check_segment_list and the x86_64
limits to the JSON the CLI prints: what the kernel would refuse must never leave the planner.
"""

import glob
import io
import json
import os
import subprocess
import sys

import pytest

from tests.unit.arm64_rules import assert_arm64_rules, fdtget, u64_cells, usable_ram  # noqa: E402
from tests.unit.conftest import newc_initrd  # noqa: E402
from tests.kernels import KernelUnavailable, kernel_package  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(REPO, "bin", "fleetboot-kexec")
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")


def _machine(path):
    with open(os.path.join(path, "machine")) as f:
        return f.read().strip()


RECORDED = sorted(p for p in glob.glob(os.path.join(SYSROOTS, "lab-*")) if _machine(p) == "x86_64")
#: arm64 trees recorded from Debian 6.1 booted on QEMU virt (qemu-arm64-*: see the fixtures' README).
RECORDED_ARM64 = sorted(p for p in glob.glob(os.path.join(SYSROOTS, "*")) if os.path.isdir(p) and _machine(p) == "aarch64")
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


# ---------------------------------------------------------------------------------------------
# arm64

@pytest.fixture(scope="module")
def arm64_inputs(tmp_path_factory):
    try:
        kernel = kernel_package("6.1.0-56-arm64")
    except KernelUnavailable as err:
        pytest.skip(str(err).splitlines()[0])
    initrd = tmp_path_factory.mktemp("initrd64") / "initrd.img"
    initrd.write_bytes(newc_initrd(30 << 20))
    return kernel.vmlinuz, str(initrd)


def test_arm64_recordings_exist():
    names = [os.path.basename(p) for p in RECORDED_ARM64]
    assert {"qemu-arm64-virt-2g-crash", "qemu-arm64-uefi-2g-crash"} <= set(names)


@pytest.mark.parametrize("sysroot", RECORDED_ARM64, ids=os.path.basename)
def test_arm64_normal_plan_passes_every_kernel_and_boot_protocol_check(sysroot, arm64_inputs, tmp_path):
    report = plan(sysroot, *arm64_inputs, "--save-segments", str(tmp_path))
    assert [s["what"] for s in report["segments"]] == ["kernel", "initrd", "dtb", "purgatory"]
    segs = assert_arm64_rules(report, usable_ram(sysroot))
    blob = open(segs["dtb"]["file"], "rb").read()
    assert u64_cells(fdtget(blob, tmp_path, "linux,initrd-start")) == segs["initrd"]["mem"]
    if os.path.isdir(os.path.join(sysroot, "sys", "firmware", "efi")):
        assert fdtget(blob, tmp_path, "linux,uefi-mmap-start") is not None


@pytest.mark.parametrize("sysroot", [p for p in RECORDED_ARM64 if p.endswith("-crash")], ids=os.path.basename)
def test_arm64_crash_plan_stays_inside_the_crash_region(sysroot, arm64_inputs, tmp_path):
    region = crash_region(sysroot)
    assert region is not None and region[1] - region[0] == 256 << 20
    report = plan(sysroot, *arm64_inputs, "--crash", "--save-segments", str(tmp_path))
    segs = assert_arm64_rules(report, usable_ram(sysroot) + [region], window=region)
    blob = open(segs["dtb"]["file"], "rb").read()
    usable = [int(w, 16) for w in fdtget(blob, tmp_path, "linux,usable-memory-range").split()]
    assert (usable[0] << 32 | usable[1], usable[2] << 32 | usable[3]) == (region[0], region[1] - region[0])
    # The core header: a PT_LOAD for the kernel image at the address /proc/kcore showed, and the
    # RAM outside the region in the linear map.
    elffile = pytest.importorskip("elftools.elf.elffile")
    with open(segs["elfcorehdr"]["file"], "rb") as f:
        core = elffile.ELFFile(io.BytesIO(f.read()))
    assert core["e_machine"] == "EM_AARCH64"
    loads = [p for p in core.iter_segments() if p["p_type"] == "PT_LOAD"]
    with open(os.path.join(sysroot, "proc", "kcore"), "rb") as f:
        kcore = elffile.ELFFile(io.BytesIO(f.read()))
    kload = [p for p in kcore.iter_segments() if p["p_type"] == "PT_LOAD" and p["p_paddr"] != (1 << 64) - 1]
    text = max(kload, key=lambda p: p["p_vaddr"])  # above the linear map (Linux 5.4+)
    assert (loads[0]["p_vaddr"], loads[0]["p_paddr"]) == (text["p_vaddr"], text["p_paddr"])
    ram = list(ram_from_iomem(sysroot))
    outside = []
    for lo, hi in ram:
        for s, e in ((lo, min(hi, region[0])), (max(lo, region[1]), hi)):
            if s < e:
                outside.append((s, e))
    assert [(p["p_paddr"], p["p_paddr"] + p["p_memsz"]) for p in loads[1:]] == outside


def ram_from_iomem(sysroot):
    """[start, end) of the top-level System RAM lines of the recorded /proc/iomem."""
    out = []
    with open(os.path.join(sysroot, "proc", "iomem")) as f:
        for line in f:
            if not line.startswith(" ") and line.rstrip().endswith(": System RAM"):
                lo, hi = line.split(":")[0].strip().split("-")
                out.append((int(lo, 16), int(hi, 16) + 1))
    return out
