"""The device tree the ppc64le loader hands the next kernel, checked with dtc (the reference
implementation) and with decoders written here from the kernel's formats."""

import os
import re
import shutil
import struct
import subprocess

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import arch as archmod
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.ppc64le import boot
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.ppc64le import devicetree as pdt
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.ppc64le.platform import PlatformFacts
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import fdt
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host

from tests.unit import ppc64le_host
from tests.unit.conftest import newc_initrd

ARCH = archmod.for_machine("ppc64le")
MiB = 1 << 20
SEED = bytes(range(64))


@pytest.fixture(scope="module")
def dtb():
    return ppc64le_host.qemu_dtb_or_skip()


def sysroot(tmp_path_factory, dtb, crash=None, name="pseries"):
    root = str(tmp_path_factory.mktemp(name))
    return ppc64le_host.make_sysroot(root, dtb, "6.1.0-56-powerpc64le", crash=crash)


@pytest.fixture(scope="module")
def host(tmp_path_factory, dtb):
    return Host.read(sysroot(tmp_path_factory, dtb, crash=(512 * MiB, 512 * MiB)))


@pytest.fixture(scope="module")
def kernel():
    from tests.kernels import kernel_package
    with open(kernel_package("6.1.0-56-powerpc64le").vmlinuz, "rb") as f:
        return f.read()


def dts(blob, tmp_path):
    """dtc's reading of a blob (fails the test on any dtc error)."""
    if not shutil.which("dtc"):
        pytest.skip("dtc is not installed (make deps)")
    path = tmp_path / "t.dtb"
    path.write_bytes(blob)
    res = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def load(host, kernel, kind="normal", initrd=None, cmdline="root=/dev/vda console=hvc0"):
    plan = ARCH.new_plan(host, kind)
    crash = ARCH.prepare_crash(plan, host, cmdline) if kind == "crash" else None
    image = boot.load(kernel, initrd, crash.cmdline if crash else cmdline, host, plan, crash=crash,
                      entropy=lambda n: SEED[:n])
    ARCH.link_purgatory(plan, image, crash)
    plan.check()
    return plan, image, crash


def segment(plan, what):
    return [s for s in plan.segments if s.what == what][0]


def test_the_crash_region_comes_from_the_device_tree(host):
    assert host.crash_region.start == 512 * MiB and host.crash_region.end == 1024 * MiB
    assert "Crash kernel" not in open(os.path.join(host.sysroot, "proc", "iomem")).read()


def test_platform_facts_of_a_pseries_guest(host):
    facts = PlatformFacts.read(host.sysroot)
    assert facts.kernel_end == 0x2880000 and facts.rma_top == 2048 * MiB
    assert [(r.type, r.start, r.size) for r in facts.keep] == [("RTAS", 0x1F000000 - 0x10000, 0x83C)]
    assert facts.vterm == 0x71000000  # /chosen/stdout-path -> /vdevice/vty@71000000, hvterm1


def test_normal_tree_round_trips_through_dtc(host, kernel, tmp_path):
    initrd = newc_initrd(3 * MiB)
    plan, image, dummy = load(host, kernel, initrd=initrd)
    blob = bytes(segment(plan, "dtb").buf)
    text = dts(blob, tmp_path)
    # dtc writes it back; parsed again it is the same tree, reservations and boot CPU included.
    (tmp_path / "t.dts").write_text(text)
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(tmp_path / "u.dtb"), str(tmp_path / "t.dts")],
                   check=True)
    assert fdt.parse_fdt((tmp_path / "u.dtb").read_bytes()) == fdt.parse_fdt(blob)
    header = struct.unpack_from(">10I", blob, 0)
    assert header[0] == 0xD00DFEED and header[5] == 17 and header[1] == len(blob)
    # /chosen as dtc reads it
    assert 'bootargs = "root=/dev/vda console=hvc0";' in text
    initrd_seg = segment(plan, "initrd")
    assert "linux,initrd-start = <0x00 %#x>;" % initrd_seg.mem in text
    assert "linux,initrd-end = <0x00 %#x>;" % (initrd_seg.mem + len(initrd)) in text
    assert "rng-seed = <0x10203 " in text
    for stale in ("linux,kernel-end", "linux,crashkernel-base", "linux,crashkernel-size", "linux,elfcorehdr",
                  "linux,usable-memory", "kaslr-seed", "linux,pci-domain"):
        assert stale not in text, stale
    assert re.search(r"\bname = ", text) is None  # derived names are not handed on
    # What the next kernel must not allocate: RTAS, the initrd, the tree itself.
    reserved = [tuple(int(x, 16) for x in m) for m in re.findall(r"/memreserve/\s+(0x[0-9a-f]+) (0x[0-9a-f]+);", text)]
    dtb_seg = segment(plan, "dtb")
    assert sorted(reserved) == sorted([(0x1F000000 - 0x10000, 0x83C), (initrd_seg.mem, len(initrd)),
                                       (dtb_seg.mem, len(blob))])
    assert image.device_tree == dtb_seg.mem and image.vterm == 0x71000000


def test_normal_segments_stay_above_the_running_kernel_and_the_new_kernels_landing(host, kernel):
    plan, image, dummy = load(host, kernel, initrd=newc_initrd(MiB))
    k = segment(plan, "kernel")
    assert k.mem >= 0x2880000 and k.mem % 0x10000 == 0
    landing = image.image.memsz
    for seg in plan.segments:
        assert seg.mem >= 0x2880000 and seg.end <= 2048 * MiB
        if seg.what != "kernel":
            assert seg.mem >= landing, seg  # the new kernel copies itself over [0, memsz) first


def test_crash_tree_limits_the_capture_kernel(host, kernel, tmp_path):
    plan, image, crash = load(host, kernel, kind="crash", initrd=newc_initrd(MiB))
    blob = bytes(segment(plan, "dtb").buf)
    tree = fdt.parse_fdt(blob)
    mem = tree.node("/memory@0")
    usable = mem.prop("linux,usable-memory").value
    assert struct.unpack(">4I", usable) == (0, 0, 0, 1024 * MiB)  # [0, end of the crash region)
    hdr = segment(plan, "elfcorehdr")
    chosen = tree.node("/chosen")
    assert struct.unpack(">QQ", chosen.prop("linux,elfcorehdr").value) == (hdr.mem, crash.elfcorehdr_size)
    assert "elfcorehdr=%#x" % hdr.mem in chosen.prop("bootargs").string()
    backup = segment(plan, "backup")
    reserved = set(tree.reservations)
    assert (0x10000, 512 * MiB - 0x10000) in reserved  # the crashed kernel's memory below the region
    assert (backup.mem, backup.memsz) in reserved and (hdr.mem, hdr.memsz) in reserved
    assert (segment(plan, "dtb").mem, len(blob)) in reserved
    assert crash.backup == (0, backup.mem, 0x10000)
    dts(blob, tmp_path)


def drconf_tree(version):
    """A tree with dynamic-reconfiguration memory: 4 LMBs of 256 MiB from 2 GiB, the middle two
    assigned (v1 lists each LMB; v2 lists runs of them)."""
    tree = fdt.DeviceTree(fdt.Node("", [fdt.Property.from_u32("#address-cells", 2),
                                        fdt.Property.from_u32("#size-cells", 2)]))
    tree.root.add_child(fdt.Node("memory@0", [fdt.Property("device_type", b"memory\0"),
                                              fdt.Property.from_u64("reg", 0, 2048 * MiB)]))
    drconf = tree.root.add_child(fdt.Node(pdt.DRCONF_NODE, [fdt.Property.from_u64("ibm,lmb-size", 256 * MiB)]))
    flags = [0, 0x8, 0x8, 0x80 | 0x8]
    if version == 1:
        body = b"".join(struct.pack(">QIIII", 2048 * MiB + i * 256 * MiB, 0x80000000 + i, 0, 0, f)
                        for i, f in enumerate(flags))
        drconf.set("ibm,dynamic-memory", struct.pack(">I", 4) + body)
    else:
        runs = [(1, 2048 * MiB, 0), (2, 2304 * MiB, 0x8), (1, 2816 * MiB, 0x88)]
        body = b"".join(struct.pack(">IQIII", n, base, 0x80000000, 0, f) for n, base, f in runs)
        drconf.set("ibm,dynamic-memory-v2", struct.pack(">I", len(runs)) + body)
    return tree


def decode_drconf_usable(value, flags):
    """linux,drconf-usable-memory as early_init_drmem_lmb() reads it: for each LMB (``flags``, in
    order) that is assigned (0x8) and not reserved (0x80) a u64 count, then that many (u64 base,
    u64 size) pairs; the others are skipped without reading anything."""
    out, at = [], 0
    for flag in flags:
        if flag & 0x80 or not flag & 0x8:
            out.append(None)
            continue
        (count,) = struct.unpack_from(">Q", value, at)
        at += 8
        pairs = [struct.unpack_from(">QQ", value, at + 16 * i) for i in range(count)]
        at += 16 * count
        out.append(pairs)
    assert at == len(value)
    return out


@pytest.mark.parametrize("version", [1, 2])
def test_dynamic_reconfiguration_memory_gets_per_lmb_usable_ranges(version):
    tree = drconf_tree(version)
    assert pdt.assigned_drconf_memory(tree) == [(2304 * MiB, 2560 * MiB), (2560 * MiB, 2816 * MiB)]
    # The capture kernel may use the first 1 GiB and [2.5 GiB, 2.75 GiB) (as if RTAS lived there).
    pdt.set_usable_memory(tree, [(0, 1024 * MiB), (2560 * MiB + 16 * MiB, 2560 * MiB + 32 * MiB)])
    value = tree.node("/" + pdt.DRCONF_NODE).prop("linux,drconf-usable-memory").value
    # LMBs: unassigned, assigned (nothing usable), assigned (16 MiB usable), assigned but reserved.
    assert decode_drconf_usable(value, [0, 0x8, 0x8, 0x88]) == [None, [], [(2576 * MiB, 16 * MiB)], None]
    assert tree.node("/memory@0").prop("linux,usable-memory").value == struct.pack(">QQ", 0, 1024 * MiB)


def test_a_memory_node_outside_the_usable_memory_gets_an_empty_range():
    tree = drconf_tree(2)
    tree.root.add_child(fdt.Node("memory@100000000", [fdt.Property("device_type", b"memory\0"),
                                                      fdt.Property.from_u64("reg", 4096 * MiB, 1024 * MiB)]))
    pdt.set_usable_memory(tree, [(0, 1024 * MiB)])
    assert tree.node("/memory@100000000").prop("linux,usable-memory").value == bytes(16)


RECORDED_CRASH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "sysroots",
                              "lab-ppc64le-pseries-2g-crash")


def test_a_recorded_pseries_tree_for_a_capture_kernel(kernel, tmp_path):
    """The live tree of a lab VM (SLOF's nodes, property names with '?', RTAS at 0x2fff0000, inside
    the crash region [512 MiB, 1 GiB)): the capture kernel's tree is what dtc reads back, and the
    core header dumps RTAS from where it lies in the region."""
    host = Host.read(RECORDED_CRASH)
    plan, image, crash = load(host, kernel, kind="crash", initrd=newc_initrd(MiB))
    blob = bytes(segment(plan, "dtb").buf)
    text = dts(blob, tmp_path)
    assert "real-mode?" in text and "slof,from-fdt" in text
    tree = fdt.parse_fdt(blob)
    live = pdt.read_live_tree(host.tree())
    assert tree.node("/options").prop("auto-boot?") == live.node("/options").prop("auto-boot?")
    assert tree.node("/rtas").prop("linux,rtas-base").u32() == 0x2FFF0000
    assert (0x2FFF0000, 0x83C) in tree.reservations
    assert struct.unpack(">QQ", tree.node("/memory@0").prop("linux,usable-memory").value) == (0, 1024 * MiB)
    for name in ("linux,crashkernel-base", "linux,kernel-end", "linux,memory-limit"):
        assert tree.node("/chosen").prop(name) is None, name
    rtas = [ld for ld in crash.loads if ld["paddr"] == 0x2FFF0000]
    assert rtas and rtas[0]["size"] == 0x10000 and rtas[0]["offset"] == 0x2FFF0000
    assert all(not 0x2FFF0000 <= s.mem < 0x30000000 for s in plan.segments)  # RTAS stays intact
    assert tree.boot_cpuid_phys == 0 and image.vterm == 0x71000000
