"""`fleetboot-kexec plan --json` on ppc64le host trees, checked by rules written here from the
kernel's code: sanity_check_segment_list() at the host's page size (64 KiB on Debian's 6.1,
4 KiB on its 6.12), machine_kexec_prepare() (nothing below the running kernel's end, nothing
over a TCE table), the crash region for crash loads, the RMA real-mode purgatory needs, and a
device tree dtc reads.  The host facts are re-read from the tree's files here, not through the
loader."""

import glob
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

from tests.kernels import KernelUnavailable, kernel_package
from tests.unit import ppc64le_host
from tests.unit.conftest import newc_initrd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(REPO, "bin", "fleetboot-kexec")
RECORDED = sorted(glob.glob(os.path.join(REPO, "tests", "fixtures", "sysroots", "lab-ppc64le-*")))
KEXEC_SEGMENT_MAX = 16
MiB = 1 << 20
#: (kernel version, page size) pairs: Debian's 6.1 ppc64el kernels use 64 KiB pages, 6.12 4 KiB.
SYNTHETIC = {"pseries-2g-64k": ("6.1.0-56-powerpc64le", 65536), "pseries-2g-4k": ("6.12.118+deb12-powerpc64le", 4096)}


def read(root, rel, mode="rb"):
    with open(os.path.join(root, rel), mode) as f:
        return f.read()


def be(data):
    return int.from_bytes(data, "big")


class Facts:
    """What the rules need, read from a host tree's files."""

    def __init__(self, root):
        dt = os.path.join(root, "proc", "device-tree")
        self.page = int(read(root, "pagesize", "r"))
        self.release = read(root, "proc/sys/kernel/osrelease", "r").strip()
        acells, scells = be(read(dt, "#address-cells")), be(read(dt, "#size-cells"))
        step = 4 * (acells + scells)
        self.memory = []
        for node in sorted(os.listdir(dt)):
            if node.startswith("memory") and os.path.exists(os.path.join(dt, node, "reg")):
                reg = read(dt, node + "/reg")
                for at in range(0, len(reg), step):
                    base = be(reg[at:at + 4 * acells])
                    self.memory.append((base, base + be(reg[at + 4 * acells:at + step])))
        self.memory.sort()
        self.kernel_end = be(read(dt, "chosen/linux,kernel-end"))
        self.rtas = (be(read(dt, "rtas/linux,rtas-base")), be(read(dt, "rtas/linux,rtas-base")) + be(read(dt, "rtas/rtas-size")))
        self.tce = []
        for node in os.listdir(dt):
            if node.startswith("pci@") and os.path.exists(os.path.join(dt, node, "linux,tce-base")):
                base = be(read(dt, node + "/linux,tce-base"))
                self.tce.append((base, base + be(read(dt, node + "/linux,tce-size"))))
        crash = os.path.join(dt, "chosen", "linux,crashkernel-base")
        self.crash = None
        if os.path.exists(crash):
            base = be(read(dt, "chosen/linux,crashkernel-base"))
            self.crash = (base, base + be(read(dt, "chosen/linux,crashkernel-size")))
        self.ram_total = sum(e - s for s, e in self.memory)


def hosts():
    return [(os.path.basename(p), p) for p in RECORDED] + [(name, None) for name in SYNTHETIC]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    dtb = ppc64le_host.qemu_dtb()
    out = {}
    for name, path in hosts():
        if path is not None:
            out[name] = path
            continue
        if dtb is None:
            continue
        version, page = SYNTHETIC[name]
        try:
            k = kernel_package(version)
        except KernelUnavailable:
            continue
        out[name] = ppc64le_host.make_sysroot(str(tmp_path_factory.mktemp(name)), dtb, version, config=k.config,
                                              page_size=page, crash=(512 * MiB, 384 * MiB))
    return out


@pytest.fixture(scope="module")
def initrd(tmp_path_factory):
    path = tmp_path_factory.mktemp("initrd") / "initrd.img"
    path.write_bytes(newc_initrd(20 * MiB))
    return str(path)


def plan(root, kernel, initrd, *extra):
    res = subprocess.run([sys.executable, CLI, "plan", "--json", "--method", "classic", "--kernel", kernel,
                          "--initrd", initrd, "--append", "root=/dev/vda console=hvc0", "--sysroot", root] + list(extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def assert_kernel_would_accept(report, facts, crash=False):
    segs = report["segments"]
    assert 0 < len(segs) <= KEXEC_SEGMENT_MAX
    pages = 0
    for s in segs:
        start, end = s["mem"], s["mem"] + s["memsz"]
        assert start % facts.page == 0 and s["memsz"] % facts.page == 0, s  # sanity_check_segment_list
        assert s["bufsz"] <= s["memsz"], s
        assert any(lo <= start and end <= hi for lo, hi in facts.memory), s
        assert start >= facts.kernel_end, s  # machine_kexec_prepare(): -ETXTBSY below __pa(_end)
        assert all(end <= lo or start >= hi for lo, hi in facts.tce), s
        assert end <= facts.memory[0][1], s  # the RMA: purgatory and kexec-tools stay in real-mode reach
        assert end <= facts.rtas[0] or start >= facts.rtas[1], s  # firmware's RTAS stays intact
        if crash:
            assert facts.crash[0] <= start and end <= facts.crash[1], s
        pages += s["memsz"] // facts.page
    ordered = sorted(segs, key=lambda s: s["mem"])
    for a, b in zip(ordered, ordered[1:]):
        assert a["mem"] + a["memsz"] <= b["mem"], (a, b)
    assert pages <= facts.ram_total // facts.page // 2
    purgatory = [s for s in segs if s["what"] == "purgatory"]
    assert len(purgatory) == 1 and purgatory[0]["mem"] <= report["entry"] < purgatory[0]["mem"] + purgatory[0]["memsz"]


def kernel_for(facts):
    try:
        return kernel_package(facts.release).vmlinuz
    except KernelUnavailable as err:
        pytest.skip(str(err).splitlines()[0])


@pytest.mark.parametrize("name", [n for n, dummy in hosts()])
def test_normal_plan_passes_the_kernels_rules(trees, initrd, name, tmp_path):
    if name not in trees:
        pytest.skip("no qemu-system-ppc64 or kernel to build %s" % name)
    facts = Facts(trees[name])
    report = plan(trees[name], kernel_for(facts), initrd, "--save-segments", str(tmp_path))
    assert report["kind"] == "normal"
    assert [s["what"] for s in report["segments"]] == ["kernel", "initrd", "dtb", "purgatory"]
    assert_kernel_would_accept(report, facts)
    dtb = [s["file"] for s in report["segments"] if s["what"] == "dtb"][0]
    if shutil.which("dtc"):
        res = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", dtb], capture_output=True, text=True, check=False)
        assert res.returncode == 0 and 'bootargs = "root=/dev/vda console=hvc0";' in res.stdout, res.stderr
    with open(dtb, "rb") as f:
        assert struct.unpack_from(">I", f.read(8), 0)[0] == 0xD00DFEED


def test_recordings_exist():
    names = [os.path.basename(p) for p in RECORDED]
    assert {"lab-ppc64le-pseries-1g", "lab-ppc64le-pseries-2g-crash", "lab-ppc64le-pseries-2g-crash-4k"} <= set(names)
    # Both page sizes of Debian's ppc64el kernels are among them.
    assert {Facts(p).page for p in RECORDED} == {4096, 65536}


def test_crash_plan_without_a_crash_region_is_refused_with_advice(initrd):
    root = [p for p in RECORDED if p.endswith("-1g")][0]
    facts = Facts(root)
    assert facts.crash is None
    res = subprocess.run([sys.executable, CLI, "plan", "--crash", "--kernel", kernel_for(facts), "--initrd", initrd,
                          "--sysroot", root], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                         check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "no crash region" in res.stderr and "crashkernel=" in res.stderr, res.stderr


@pytest.mark.parametrize("name", [n for n, dummy in hosts() if not n.endswith("-1g")])
def test_crash_plan_stays_in_the_crash_region_from_the_device_tree(trees, initrd, name):
    if name not in trees:
        pytest.skip("no qemu-system-ppc64 or kernel to build %s" % name)
    facts = Facts(trees[name])
    assert facts.crash is not None
    assert "Crash kernel" not in read(trees[name], "proc/iomem", "r")  # only the device tree has it
    report = plan(trees[name], kernel_for(facts), initrd, "--crash")
    assert report["kind"] == "crash"
    assert {s["what"] for s in report["segments"]} == {"backup", "elfcorehdr", "kernel", "initrd", "dtb", "purgatory"}
    assert_kernel_would_accept(report, facts, crash=True)
    kernel = [s for s in report["segments"] if s["what"] == "kernel"][0]
    assert kernel["mem"] == facts.crash[0]  # the capture kernel runs at the start of the region
    assert "elfcorehdr=" in report["cmdline"] and "maxcpus=1" in report["cmdline"]
