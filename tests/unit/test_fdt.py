"""core/fdt.py and core/fdt_fs.py against dtc as an independent oracle, on QEMU's own trees.

QEMU dumps the device tree it would give a guest (``-machine dumpdtb=FILE``) without booting
anything: arm64 ``virt`` (padded to 1 MiB, like ``/sys/firmware/fdt``) and ppc64 ``pseries``.
Recorded lab trees (``tests/fixtures/sysroots/lab-arm64-*/sys/firmware/fdt`` and
``lab-ppc64le-*/proc/device-tree``) join the parametrisation when they exist.
"""

import glob
import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import fdt, fdt_fs
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import HostError, ImageFormatError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")

QEMU_TREES = {
    "qemu-virt-arm64": ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-m", "2048"],
    "qemu-virt-arm64-gicv3-4g": ["qemu-system-aarch64", "-M", "virt,gic-version=3", "-cpu", "cortex-a72",
                                 "-smp", "4", "-m", "4096"],
    "qemu-pseries": ["qemu-system-ppc64", "-M", "pseries"],
    "qemu-pseries-smp2-4g": ["qemu-system-ppc64", "-M", "pseries", "-smp", "2", "-m", "4096"],
}
RECORDED_DTBS = sorted(glob.glob(os.path.join(SYSROOTS, "lab-arm64-*", "sys", "firmware", "fdt")))
RECORDED_FS = sorted(glob.glob(os.path.join(SYSROOTS, "lab-ppc64le-*", "proc", "device-tree")))
REAL_TREES = sorted(QEMU_TREES) + [os.path.relpath(p, SYSROOTS) for p in RECORDED_DTBS]


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip("%s is not installed (make deps installs it)" % tool)


def run(*argv, data=None):
    """A tool's stdout as text; the test fails with its stderr if it fails."""
    need(argv[0])
    proc = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)
    assert proc.returncode == 0, "%s failed: %s" % (" ".join(argv), proc.stderr.decode(errors="replace"))
    return proc.stdout.decode("latin-1")


def dts(blob, *options):
    """dtc's reading of a blob (bytes) or of a directory (str path, ``-I fs``)."""
    if isinstance(blob, str):
        return run("dtc", "-q", "-I", "fs", "-O", "dts", *options, blob)
    return run("dtc", "-q", "-I", "dtb", "-O", "dts", *options, "-", data=bytes(blob))


def dtb_from_dts(source, *options):
    need("dtc")
    proc = subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", *options, "-"], input=source.encode(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def fdtdump_header(blob, tmp_path):
    """The header fields as fdtdump prints them."""
    path = tmp_path / "header.dtb"
    path.write_bytes(blob)
    return dict((k, int(v, 0)) for k, v in re.findall(r"^// (\w+):\s+(0x[0-9a-f]+|\d+)", run("fdtdump", str(path)), re.M))


def fdtget(blob, tmp_path, node, prop, kind="x"):
    """libfdt's reading of a property (fdtget -t x: u32 words in hex; -t bx: bytes; -t s)."""
    path = tmp_path / "get.dtb"
    path.write_bytes(blob)
    return run("fdtget", "-t", kind, str(path), node, prop).split()


def without_node(text, name):
    """A dts text with the top-level block ``name { ... };`` cut out (dtc indents with tabs)."""
    return re.sub(r"^\t%s \{\n.*?^\t\};\n" % re.escape(name), "", text, flags=re.M | re.S)


def block_of(text, name):
    match = re.search(r"^\t%s \{\n(.*?)^\t\};\n" % re.escape(name), text, flags=re.M | re.S)
    assert match, "no node %s in the dts" % name
    return match.group(1)


@pytest.fixture(scope="session")
def qemu_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("qemu-dtbs")


@pytest.fixture(scope="session")
def qemu_dtb(qemu_dir):
    """A function: tree name -> the dtb bytes QEMU dumps (cached for the session)."""
    cache = {}

    def get(name):
        if name not in cache:
            argv = QEMU_TREES[name]
            if shutil.which(argv[0]) is None:
                pytest.skip("%s is not installed: no QEMU device tree to test against" % argv[0])
            out = str(qemu_dir / (name + ".dtb"))
            # -nographic: pseries names its console in /chosen only when there is no display
            proc = subprocess.run(argv + ["-accel", "tcg", "-nographic", "-machine", "dumpdtb=" + out],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=120, check=False)
            assert proc.returncode == 0 and os.path.exists(out), proc.stdout.decode(errors="replace")
            with open(out, "rb") as f:
                cache[name] = f.read()
        return cache[name]
    return get


@pytest.fixture(params=REAL_TREES)
def real_dtb(request, qemu_dtb):
    """(name, bytes) of each real flattened tree: QEMU's dumps and any recorded lab trees."""
    if request.param in QEMU_TREES:
        return request.param, qemu_dtb(request.param)
    with open(os.path.join(SYSROOTS, request.param), "rb") as f:
        return request.param, f.read()


def header_of(blob):
    return dict(zip(fdt._HEADER_FIELDS, struct.unpack_from(">10I", blob, 0)))  # pylint: disable=protected-access


# ---------------------------------------------------------------------------------------------
# Real trees: read -> write -> dtc sees the same tree

def test_round_trip_is_the_same_tree_for_dtc(real_dtb, tmp_path):
    name, blob = real_dtb
    tree = fdt.parse_fdt(blob)
    ours = fdt.build_fdt(tree)
    assert dts(ours) == dts(blob), name
    theirs, mine = fdtdump_header(blob, tmp_path), fdtdump_header(ours, tmp_path)
    assert (mine["version"], mine["last_comp_version"]) == (17, 16)
    assert mine["boot_cpuid_phys"] == theirs["boot_cpuid_phys"] == tree.boot_cpuid_phys
    # libfdt (fdtget checks the header with fdt_check_header) reads ours as it reads theirs
    # (#address-cells: every tree has it; the EFI stub's minimal tree on a UEFI arm64 host has no compatible)
    assert fdtget(ours, tmp_path, "/", "#address-cells") == fdtget(blob, tmp_path, "/", "#address-cells")
    assert fdt.parse_fdt(ours) == tree
    assert fdt.build_fdt(fdt.parse_fdt(ours)) == ours == fdt.build_fdt(tree)  # deterministic


def test_qemu_virt_blob_is_padded_and_still_reads(qemu_dtb):
    blob = qemu_dtb("qemu-virt-arm64")
    head = header_of(blob)
    used = max(head["off_dt_strings"] + head["size_dt_strings"], head["off_dt_struct"] + head["size_dt_struct"])
    assert len(blob) == head["totalsize"] == 1 << 20 and used < len(blob) // 4  # mostly padding
    assert fdt.parse_fdt(blob + b"\xff" * 100) == fdt.parse_fdt(blob)  # bytes past totalsize are ignored
    assert fdt.parse_fdt(memoryview(blob)) == fdt.parse_fdt(bytearray(blob)) == fdt.parse_fdt(blob)


def test_written_blob_layout_follows_the_spec(real_dtb):
    tree = fdt.parse_fdt(real_dtb[1])
    tree.reservations = [(0x1000, 0x2000)]
    blob = fdt.build_fdt(tree, pad=3000)
    head = header_of(blob)
    assert head["magic"] == fdt.FDT_MAGIC and head["totalsize"] == len(blob)
    assert head["off_mem_rsvmap"] % 8 == 0 and head["off_dt_struct"] % 4 == 0
    assert head["off_dt_struct"] == head["off_mem_rsvmap"] + 16 * 2  # one entry and the terminator
    assert head["off_dt_strings"] == head["off_dt_struct"] + head["size_dt_struct"]
    assert head["totalsize"] == head["off_dt_strings"] + head["size_dt_strings"] + 3000
    assert blob[-3000:] == b"\0" * 3000
    end = head["off_dt_struct"] + head["size_dt_struct"]
    assert struct.unpack_from(">I", blob, end - 4)[0] == fdt.FDT_END
    strings = blob[head["off_dt_strings"]:head["off_dt_strings"] + head["size_dt_strings"]]
    names = strings.split(b"\0")
    assert names[-1] == b"" and len(set(names[:-1])) == len(names) - 1  # every name once
    assert set(n.decode("latin-1") for n in names[:-1]) == set(p.name for _path, n in tree.walk() for p in n.properties)
    assert dts(blob) == dts(fdt.build_fdt(tree))  # the pad changes nothing dtc sees


def test_reservations_are_written_as_memreserve(real_dtb):
    tree = fdt.parse_fdt(real_dtb[1])
    entries = [(0x1000, 0x2000), (0x8_4000_0000, 0x20_0000), (0xffff_ffff_ffff_0000, 0xffff)]
    tree.reservations = list(entries)
    text = dts(fdt.build_fdt(tree))
    found = [(int(a, 16), int(s, 16)) for a, s in re.findall(r"^/memreserve/\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+);", text, re.M)]
    assert found == entries
    assert re.sub(r"^/memreserve/.*\n", "", text, flags=re.M) == dts(real_dtb[1])  # the nodes are untouched


def test_reservations_boot_cpu_and_version_16_read_from_dtc_output():
    source = "/dts-v1/;\n/memreserve/ 0x10000000 0x4000;\n/memreserve/ 0x200000000 0x100000;\n" \
             "/ { #address-cells = <2>; #size-cells = <2>; cpus { cpu@3 { reg = <3>; }; }; };\n"
    tree = fdt.parse_fdt(dtb_from_dts(source, "-b", "3"))
    assert tree.reservations == [(0x10000000, 0x4000), (0x2_0000_0000, 0x100000)]
    assert tree.boot_cpuid_phys == 3
    old = dtb_from_dts(source, "-b", "3", "-V", "16")
    assert header_of(old)["version"] == 16
    assert fdt.parse_fdt(old) == tree


def test_boot_cpuid_phys_is_written(tmp_path, qemu_dtb):
    tree = fdt.parse_fdt(qemu_dtb("qemu-pseries-smp2-4g"))
    tree.boot_cpuid_phys = 5
    assert fdtdump_header(fdt.build_fdt(tree), tmp_path)["boot_cpuid_phys"] == 5


# ---------------------------------------------------------------------------------------------
# /chosen edits, seen by dtc and libfdt

def test_chosen_edits_are_what_dtc_and_libfdt_read(real_dtb, tmp_path):
    name, blob = real_dtb
    original = dts(blob)
    tree = fdt.parse_fdt(blob)
    before = dict((p.name, p.value) for p in tree.node("/chosen").properties)
    dropped = fdt.drop_chosen_properties(tree, fdt.CHOSEN_PROPERTIES + ("qemu,graphic-width",))
    assert set(dropped) == set(fdt.CHOSEN_PROPERTIES + ("qemu,graphic-width",)) & set(before)
    fdt.set_bootargs(tree, "console=ttyAMA0 root=/dev/vda1 ro quiet")
    fdt.set_initrd(tree, 0x4800_0000, 0x4912_3457)
    fdt.set_kaslr_seed(tree, 0x0123_4567_89AB_CDEF)
    fdt.set_rng_seed(tree, bytes(range(1, 33)))
    fdt.set_elfcorehdr(tree, 0x1_2340_0000, 0x1800)
    fdt.set_usable_memory_range(tree, [(0x1_0000_0000, 0x1000_0000), (0x3000_0000, 0x100_0000)])
    ours = fdt.build_fdt(tree)
    text = dts(ours)
    assert without_node(text, "chosen") == without_node(original, "chosen"), name
    chosen = block_of(text, "chosen")
    assert '\t\tbootargs = "console=ttyAMA0 root=/dev/vda1 ro quiet";\n' in chosen
    assert "qemu,graphic-width" not in chosen

    def get(prop, kind="x"):
        return fdtget(ours, tmp_path, "/chosen", prop, kind)
    assert get("linux,initrd-start") == ["0", "48000000"]  # u64: two cells whatever the root's cells
    assert get("linux,initrd-end") == ["0", "49123457"]
    assert get("kaslr-seed") == ["1234567", "89abcdef"]
    assert get("rng-seed", "bx") == ["%x" % i for i in range(1, 33)]
    assert tree.root_cells() == (2, 2)  # QEMU's virt and pseries: 2 address and 2 size cells
    assert get("linux,elfcorehdr") == ["1", "23400000", "0", "1800"]
    assert get("linux,usable-memory-range") == ["1", "0", "0", "10000000", "0", "30000000", "0", "1000000"]
    for prop, value in before.items():  # what was not dropped stays as it was
        if prop not in dropped:
            assert tree.node("/chosen").prop(prop).value == value


def test_chosen_removals_and_a_tree_without_chosen():
    tree = fdt.parse_fdt(dtb_from_dts("/dts-v1/;\n/ { #address-cells = <1>; #size-cells = <1>; };\n"))
    assert tree.node("/chosen") is None
    fdt.set_bootargs(tree, "quiet")
    fdt.set_initrd(tree, 0x100, 0x200)
    fdt.set_elfcorehdr(tree, 0x8000_0000, 0x1000)
    fdt.set_usable_memory_range(tree, [(0x6000_0000, 0x1000_0000)])
    chosen = tree.node("/chosen")
    assert chosen.prop("bootargs").string() == "quiet"
    assert chosen.prop("linux,initrd-start").number() == 0x100 and chosen.prop("linux,initrd-end").number() == 0x200
    assert chosen.prop("linux,elfcorehdr").value == struct.pack(">II", 0x8000_0000, 0x1000)  # root cells: 1 + 1
    assert fdt.decode_ranges(chosen.prop("linux,usable-memory-range"), 1, 1) == [(0x6000_0000, 0x1000_0000)]
    with pytest.raises(ImageFormatError, match="does not fit in 1 32-bit cells"):
        fdt.set_elfcorehdr(tree, 0x1_0000_0000, 0x1000)
    with pytest.raises(ImageFormatError, match="at most 2 ranges"):
        fdt.set_usable_memory_range(tree, [(0, 1), (2, 1), (4, 1)])
    with pytest.raises(ImageFormatError, match="below its start"):
        fdt.set_initrd(tree, 0x200, 0x100)
    fdt.set_bootargs(tree, None)
    fdt.set_initrd(tree, None, None)
    fdt.set_elfcorehdr(tree, None, None)
    fdt.set_usable_memory_range(tree, None)
    fdt.set_kaslr_seed(tree, None)
    fdt.set_rng_seed(tree, b"")
    assert chosen.properties == []
    assert "chosen {\n\t};" in dts(fdt.build_fdt(tree))


# ---------------------------------------------------------------------------------------------
# The model: lookups, cells, reg, plain values

MODEL_DTS = r"""/dts-v1/;
/ {
    #address-cells = <2>; #size-cells = <2>;
    aliases { serial0 = "/soc/uart@1000"; mmc = &mmc; };
    chosen { stdout-path = "serial0:115200n8"; };
    memory@80000000 { device_type = "memory"; reg = <0 0x80000000 0 0x40000000>, <8 0 0 0x10000000>; };
    memory@c0000000 { device_type = "memory"; reg = <0 0xc0000000 0 0x1000>; status = "disabled"; };
    memory@900000000 { device_type = "memory"; reg = <9 0 0 0x1000>; linux,usable-memory = <9 0 0 0x800>; };
    reserved-memory {
        #address-cells = <2>; #size-cells = <2>; ranges;
        secmon@81000000 { reg = <0 0x81000000 0 0x200000>; no-map; };
        dyn { size = <0 0x400000>; };
    };
    soc {
        #address-cells = <1>; #size-cells = <1>;
        uart@1000 { compatible = "ns16550a", "snps,dw-apb-uart"; reg = <0x1000 0x100>; interrupt-parent = <&mmc>; };
        mmc: mmc@2000 { reg = <0x2000 0x100>; };
        bus { inner@10 { reg = <0x10 0x4>; }; };
    };
    cpus { #address-cells = <1>; #size-cells = <0>; cpu@0 { reg = <0>; }; cpu@1 { reg = <1>; }; };
};
"""


@pytest.fixture
def model():
    return fdt.parse_fdt(dtb_from_dts(MODEL_DTS))


def test_paths_aliases_and_phandles(model):
    assert model.node("/soc/uart@1000") is model.node("serial0")
    assert model.node("/soc/uart").name == "uart@1000"  # a unit address may be left out
    assert model.node("mmc").name == "mmc@2000" and model.node("mmc/") is model.node("mmc")
    assert model.node("/nowhere") is None and model.node("nosuchalias/x") is None
    phandle = model.node("mmc").prop("phandle").u32()
    assert model.by_phandle(phandle) is model.node("/soc/mmc@2000") and model.by_phandle(0xdead) is None
    assert model.stdout_path() == "/soc/uart@1000"
    assert model.node("/soc/uart").prop("compatible").strings() == ["ns16550a", "snps,dw-apb-uart"]
    new = model.node("/a/b@1/c", create=True)
    assert new.name == "c" and model.node("/a/b@1").children == [new]
    assert [p for p, _node in model.walk()][:4] == ["/", "/aliases", "/chosen", "/memory@80000000"]


def test_cells_reg_memory_and_reserved_memory(model):
    assert model.root_cells() == (2, 2)
    assert model.reg("/soc/uart@1000") == [(0x1000, 0x100)]
    assert model.child_cells("/soc/bus") == (1, 1)  # inherited from /soc, as of_n_addr_cells() does
    assert model.reg("/soc/bus/inner@10") == [(0x10, 4)]
    assert model.reg("/cpus/cpu@1") == [(1, None)]  # #size-cells 0
    assert model.reg("/") == [] and model.reg("/soc") == []
    assert model.memory() == [(0x80000000, 0x40000000), (0x8_0000_0000, 0x10000000), (0x9_0000_0000, 0x800)]
    assert model.reserved_memory() == [("secmon@81000000", 0x81000000, 0x200000)]
    with pytest.raises(ImageFormatError, match="no node /soc/none"):
        model.reg("/soc/none")


def test_real_trees_memory_and_console(qemu_dtb, tmp_path):
    virt = fdt.parse_fdt(qemu_dtb("qemu-virt-arm64"))
    assert virt.memory() == [(0x4000_0000, 2048 << 20)]
    assert virt.stdout_path() == "/pl011@9000000" and virt.reg("/pl011@9000000") == [(0x900_0000, 0x1000)]
    intc = virt.by_phandle(virt.root.prop("interrupt-parent").u32())
    assert intc.name.startswith("intc@") and intc.prop("interrupt-controller") is not None
    big = fdt.parse_fdt(qemu_dtb("qemu-virt-arm64-gicv3-4g"))
    assert big.memory() == [(0x4000_0000, 4096 << 20)]  # ends above 4 GiB: 2-cell sizes
    pseries = fdt.parse_fdt(qemu_dtb("qemu-pseries"))
    assert pseries.stdout_path() == "/vdevice/vty@71000000"
    assert pseries.reg("/vdevice/vty@71000000") == [(0x71000000, None)]  # /vdevice: 1 address cell, 0 size
    blob = fdt.build_fdt(pseries)
    raw = fdtget(blob, tmp_path, "/memory@0", "reg")
    assert pseries.memory()[0] == ((int(raw[0], 16) << 32) | int(raw[1], 16), (int(raw[2], 16) << 32) | int(raw[3], 16))


def test_plain_values_edit_and_compare(model):
    copy = fdt.parse_fdt(fdt.build_fdt(model))
    assert copy == model and copy.to_dict() == model.to_dict()
    assert json.loads(json.dumps(model.to_dict())) == model.to_dict()
    soc = model.to_dict()["root"]["children"][-2]
    assert soc["name"] == "soc" and soc["properties"]["#size-cells"] == "00000001"
    node = copy.node("/soc/uart")
    node.set_u32("clock-frequency", 1843200)
    assert copy != model and node.prop("clock-frequency").u32() == 1843200
    assert node.remove("clock-frequency") and not node.remove("clock-frequency") and copy == model
    node.set("compatible", b"x\0")  # replaced in place: the order stays
    assert [p.name for p in node.properties] == ["compatible", "reg", "interrupt-parent"]
    assert copy.node("/soc").remove_child("mmc@2000") and copy.node("mmc") is None and copy != model
    copy.reservations = [(1, 2)]
    assert copy.to_dict()["reservations"] == [[1, 2]]
    with pytest.raises(ImageFormatError, match="two children"):
        copy.root.add_child(fdt.Node("soc"))


def test_property_helpers_refuse_wrong_shapes():
    assert fdt.Property.from_u64("x", 1, 2 << 40).cells(2) == [1, 2 << 40]
    assert fdt.Property.from_u32("x", 7).number() == 7 and fdt.Property.from_u64("x", 7).number() == 7
    assert fdt.Property.from_strings("x", "a", "", "b").strings() == ["a", "", "b"]
    for call, message in [(lambda: fdt.Property("p", b"\1\2\3").u32(), "3 bytes, expected 4"),
                          (lambda: fdt.Property("p", b"\0" * 4).u64(), "4 bytes, expected 8"),
                          (lambda: fdt.Property("p", b"\0" * 6).cells(), "not a list of 1-cell"),
                          (lambda: fdt.Property("p", b"abc").string(), "not a NUL-terminated"),
                          (lambda: fdt.Property("p", b"a\0b\0").string(), "2 strings"),
                          (lambda: fdt.Property("p", b"\0" * 20).number(), "cannot be read as 5 cells"),
                          (lambda: fdt.Property.from_u32("p", 1 << 32), "does not fit"),
                          (lambda: fdt.Property.from_u32("p", -1), "does not fit"),
                          (lambda: fdt.decode_ranges(fdt.Property("reg", b"\0" * 12), 2, 2), "not a list of")]:
        with pytest.raises(ImageFormatError, match=message):
            call()


def test_writer_refuses_what_no_blob_can_hold():
    for bad in [fdt.Node("", children=[fdt.Node("a/b")]), fdt.Node("", children=[fdt.Node("")]),
                fdt.Node("", properties=[fdt.Property("")]), fdt.Node("", properties=[fdt.Property("a\0b")])]:
        with pytest.raises(ImageFormatError, match="invalid"):
            fdt.build_fdt(fdt.DeviceTree(bad))
    with pytest.raises(ImageFormatError, match="reservation"):
        fdt.build_fdt(fdt.DeviceTree(reservations=[(1 << 64, 1)]))
    with pytest.raises(ImageFormatError, match="reservation"):
        fdt.build_fdt(fdt.DeviceTree(reservations=[(0, 0)]))  # would end the block early
    for tree, pad in [(fdt.DeviceTree(boot_cpuid_phys=1 << 32), 0), (fdt.DeviceTree(), -1)]:
        with pytest.raises(ImageFormatError, match="does not fit a u32"):
            fdt.build_fdt(tree, pad)
    deep = fdt.DeviceTree()
    deep.node("/" + "/".join(["n"] * (fdt.MAX_DEPTH + 1)), create=True)
    with pytest.raises(ImageFormatError, match="deeper than 64"):
        fdt.build_fdt(deep)


# ---------------------------------------------------------------------------------------------
# Unflattened trees (/proc/device-tree): our reader against `dtc -I fs`

ODD_NAMES = ["ibm,ppc-interrupt-server#s", "linux,?odd+name", "a,b.c#d*", "+plus", "#cells?"]
ODD_NODES = ["odd,node+x@1,2", "a_b-c.d@ff"]


def unflatten(tree, top):
    """Write a tree as the kernel shows one under /proc/device-tree: a directory per node, a
    file per property, and a ``name`` file on every node that lacks one (populate_properties())."""
    todo = [(top, tree.root)]
    while todo:
        path, node = todo.pop()
        os.makedirs(path, exist_ok=True)
        for prop in node.properties:
            with open(os.path.join(path, prop.name), "wb") as f:
                f.write(prop.value)
        if node.prop("name") is None:
            with open(os.path.join(path, "name"), "wb") as f:
                f.write(node.basename.encode() + b"\0")
        todo.extend((os.path.join(path, c.name), c) for c in node.children)


def with_odd_properties(tree):
    node = tree.node("/chosen", create=True)
    for i, name in enumerate(ODD_NAMES):
        node.set(name, bytes([i, 0, 0xff, 0x80]) * (i + 1))
    node.set("empty-flag", b"")
    for name in ODD_NODES:
        tree.root.add_child(fdt.Node(name)).set("reg", b"\0\0\0\1")
    node.set("binary", bytes(range(256)) * 3)  # NULs and every byte value, kept exactly
    return tree


def drop_derived_names(tree):
    for _path, node in tree.walk():
        if node.prop("name") is not None and node.prop("name").value == node.basename.encode() + b"\0":
            node.remove("name")
    return tree


def test_directory_tree_reads_as_dtc_reads_it(real_dtb, tmp_path):
    name, blob = real_dtb
    tree = with_odd_properties(fdt.parse_fdt(blob))
    top = str(tmp_path / "device-tree")
    unflatten(tree, top)
    ours = fdt_fs.read_fs(top)
    assert dts(fdt.build_fdt(ours), "-s") == dts(top, "-s"), name
    assert all(ours.node("/chosen").prop(n).value == tree.node("/chosen").prop(n).value for n in ODD_NAMES + ["binary"])
    assert ours.node("/chosen").prop("empty-flag").value == b""
    assert all(ours.node("/" + n).prop("reg").value == b"\0\0\0\1" for n in ODD_NODES)
    # without the kernel's derived `name` files it is the flattened tree we started from
    expected = drop_derived_names(fdt.parse_fdt(fdt.build_fdt(tree)))
    got = fdt_fs.read_fs(top, keep_name_properties=False)
    assert dts(fdt.build_fdt(got), "-s") == dts(fdt.build_fdt(expected), "-s")
    assert fdt.build_fdt(fdt_fs.read_fs(top)) == fdt.build_fdt(ours)  # same directory, same bytes


@pytest.mark.parametrize("recorded", [os.path.relpath(p, SYSROOTS) for p in RECORDED_FS] or
                         [pytest.param("none", marks=pytest.mark.skip(reason="no recorded lab-ppc64le-* "
                                                                             "proc/device-tree yet"))])
def test_recorded_proc_device_tree_reads_as_dtc_reads_it(recorded):
    top = os.path.join(SYSROOTS, recorded)
    tree = fdt_fs.read_fs(top)
    assert dts(fdt.build_fdt(tree), "-s") == dts(top, "-s")
    assert fdt.parse_fdt(fdt.build_fdt(tree)) == tree


def alarm_guard(seconds):
    def expired(signum, frame):
        raise AssertionError("reading the tree blocked for %d s" % seconds)
    signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)


def test_links_fifos_and_devices_are_not_followed_or_opened(tmp_path):
    top = tmp_path / "dt"
    (top / "node@1").mkdir(parents=True)
    (top / "node@1" / "reg").write_bytes(b"\0\0\0\1")
    outside = tmp_path / "secret"
    outside.write_bytes(b"outside the tree\0")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "leak").write_bytes(b"x")
    os.symlink(str(outside), str(top / "node@1" / "link-to-file"))
    os.symlink(str(tmp_path / "outdir"), str(top / "link-to-dir"))
    os.symlink("../..", str(top / "node@1" / "loop"))
    os.mkfifo(str(top / "node@1" / "fifo"))
    try:
        os.mknod(str(top / "node@1" / "null"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError:
        pass  # not allowed here: the FIFO still covers "never open a special file"
    link = tmp_path / "proc-device-tree"
    os.symlink(str(top), str(link))  # /proc/device-tree itself is a link; that one is followed
    alarm_guard(30)
    try:
        tree = fdt_fs.read_fs(str(link))
    finally:
        signal.alarm(0)
    # (dtc -I fs would follow the links, so it is no oracle here)
    assert tree == fdt.DeviceTree(fdt.Node("", children=[fdt.Node("node@1", [fdt.Property("reg", b"\0\0\0\1")])]))


def test_directory_limits_and_unreadable_trees(tmp_path):
    top = tmp_path / "dt"
    (top / "a").mkdir(parents=True)
    (top / "a" / "big").write_bytes(b"\1" * 5000)
    (top / "small").write_bytes(b"\2" * 100)
    assert fdt_fs.read_fs(str(top)).node("/a").prop("big").value == b"\1" * 5000
    with pytest.raises(HostError, match="larger than 4096 bytes"):
        fdt_fs.read_fs(str(top), max_property=4096)
    with pytest.raises(HostError, match="larger than"):
        fdt_fs.read_fs(str(top), max_total=5050)
    with pytest.raises(HostError, match="more than 1 nodes"):
        fdt_fs.read_fs(str(top), max_nodes=1)
    deep = tmp_path / "deep"
    path = os.path.join(str(deep), *(["n"] * (fdt.MAX_DEPTH + 2)))
    os.makedirs(path)
    with pytest.raises(HostError, match="deeper than 64"):
        fdt_fs.read_fs(str(deep))
    with pytest.raises(HostError, match="cannot read the device tree at"):
        fdt_fs.read_fs(str(tmp_path / "missing"))
    with pytest.raises(HostError, match="not a directory"):
        fdt_fs.read_fs(str(top / "small"))
    if os.geteuid() != 0:  # root reads through any mode bits
        (top / "a").chmod(0)
        try:
            with pytest.raises(HostError, match="cannot list"):
                fdt_fs.read_fs(str(top))
        finally:
            (top / "a").chmod(0o755)


# ---------------------------------------------------------------------------------------------
# Corrupt blobs: ImageFormatError, naming what and where, and nothing else

SMALL_DTS = "/dts-v1/;\n/memreserve/ 0x1000 0x1000;\n/ { #address-cells = <1>; model = \"m\";\n" \
            "  chosen { bootargs = \"quiet\"; }; node@10 { reg = <0x10>; status = \"okay\"; }; };\n"


@pytest.fixture(scope="module")
def small():
    return bytearray(dtb_from_dts(SMALL_DTS))


def patched(blob, field, value):
    out = bytearray(blob)
    struct.pack_into(">I", out, 4 * fdt._HEADER_FIELDS.index(field), value)  # pylint: disable=protected-access
    return out


def first_prop_offset(blob):
    head = header_of(blob)
    at = head["off_dt_struct"]
    while struct.unpack_from(">I", blob, at)[0] != fdt.FDT_PROP:
        at += 4
    return at


def test_every_truncation_is_refused(small, qemu_dtb):
    for size in range(len(small)):
        with pytest.raises(ImageFormatError):
            fdt.parse_fdt(bytes(small[:size]))
    for size in range(fdt.HEADER_SIZE_V17):  # every header field, by name
        with pytest.raises(ImageFormatError, match="header field %s" % fdt._HEADER_FIELDS[size // 4]):  # pylint: disable=protected-access
            fdt.parse_fdt(bytes(small[:size]))
    blob = fdt.build_fdt(fdt.parse_fdt(qemu_dtb("qemu-pseries")))
    for size in range(0, len(blob), 97):
        with pytest.raises(ImageFormatError, match="truncated"):
            fdt.parse_fdt(blob[:size])


@pytest.mark.parametrize("field, value, message", [
    ("magic", 0xEDFE0DD0, "no magic"),
    ("totalsize", 0x7FFFFFFF, "totalsize 0x7fffffff is outside"),
    ("totalsize", 20, "totalsize 0x14 is outside"),
    ("off_dt_struct", 0x7FFFFFF0, "structure block"),
    ("off_dt_struct", 0x3A, "structure block .* aligned"),
    ("off_dt_struct", 4, "structure block"),
    ("size_dt_struct", 0xFFFFFFFF, "structure block"),
    ("off_dt_strings", 0xFFFFFFFF, "strings block"),
    ("size_dt_strings", 0x10000000, "strings block"),
    ("off_mem_rsvmap", 0x2C, "memory reservation block .* aligned"),
    ("off_mem_rsvmap", 0xFFFFFF00, "memory reservation block"),
    ("version", 15, "version 15: only versions 16"),
    ("last_comp_version", 18, "needs a reader of version 18"),
])
def test_bad_header_fields_are_named(small, field, value, message):
    with pytest.raises(ImageFormatError, match=message):
        fdt.parse_fdt(patched(small, field, value))


def test_bad_structure_and_strings_are_named(small):
    head = header_of(small)
    prop = first_prop_offset(small)
    cases = []
    out = bytearray(small)
    struct.pack_into(">I", out, prop + 8, head["size_dt_strings"] + 5)
    cases.append((out, "name offset 0x.* outside the strings block"))
    out = bytearray(small)
    struct.pack_into(">I", out, prop + 4, 0x7FFFFFF0)
    cases.append((out, "runs past the structure block"))
    out = bytearray(small)
    struct.pack_into(">I", out, prop, 0x77)
    cases.append((out, "unknown token 0x77 at %#x" % prop))
    cases.append((patched(small, "size_dt_strings", head["size_dt_strings"] - 1),
                  "property name at 0x.* is not NUL-terminated|name offset"))
    cut = bytes(small).index(b"chosen\0") + 3 - head["off_dt_struct"]  # the block ends inside a node name
    cases.append((patched(small, "size_dt_struct", cut), "node name at 0x.* is not NUL-terminated"))
    cases.append((patched(small, "size_dt_struct", head["size_dt_struct"] - 4), "runs past the structure block"))
    out = bytearray(small)  # the root's first property: its name offset into an empty region
    struct.pack_into(">I", out, prop + 8, head["size_dt_strings"] - 1)
    cases.append((out, "empty name"))
    out = bytearray(small)
    rsv = head["off_mem_rsvmap"]
    out[rsv:head["off_dt_struct"]] = b"\1" * (head["off_dt_struct"] - rsv)
    out[head["off_dt_struct"]:] = b"\1" * (len(out) - head["off_dt_struct"])
    cases.append((out, "no \\(0, 0\\) terminator"))
    for blob, message in cases:
        with pytest.raises(ImageFormatError, match=message):
            fdt.parse_fdt(bytes(blob))


def blob_with_struct(tokens, strings=b"name\0"):
    """A header and reservation block around a hand-made structure block."""
    body = b"".join(struct.pack(">I", t) if isinstance(t, int) else t for t in tokens)
    off_struct = 40 + 16
    total = off_struct + len(body) + len(strings)
    return struct.pack(">10I", fdt.FDT_MAGIC, total, off_struct, off_struct + len(body), 40, 17, 16, 0,
                       len(strings), len(body)) + b"\0" * 16 + body + strings


@pytest.mark.parametrize("tokens, message", [
    ([1, b"\0\0\0\0", 2, 1, b"\0\0\0\0", 2, 9], "a second root node"),
    ([2, 9], "FDT_END_NODE outside any node"),
    ([3, 0, 0, 1, b"\0\0\0\0", 2, 9], "a property outside any node"),
    ([1, b"\0\0\0\0", 9], "node '' still open"),
    ([4, 4, 9], "no root node"),
    ([1, b"\0\0\0\0", 1, b"a/b\0", 2, 2, 9], "invalid node name 'a/b'"),
    ([1, b"\0\0\0\0", 1, b"\0\0\0\0", 2, 2, 9], "invalid node name ''"),
    ([1, b"\0\0\0\0", 1, b"x\0\0\0", 2, 1, b"x\0\0\0", 2, 2, 9], "at 0x.*: node '' has two children called 'x'"),
    ([1, b"\0\0\0\0", 3, 0, 0, 3, 0, 0, 2, 9], "at 0x.*: node '' has two properties called 'name'"),
    ([1, b"\0\0\0\0", 2], "structure token at 0x.* runs past"),
])
def test_bad_token_streams_are_named(tokens, message):
    with pytest.raises(ImageFormatError, match=message):
        fdt.parse_fdt(blob_with_struct(tokens))
    # the same stream with NOPs sprinkled in fails the same way (NOPs are skipped, spec 5.4.1)
    with pytest.raises(ImageFormatError, match=message.replace("0x.*", ".*")):
        fdt.parse_fdt(blob_with_struct([4] + tokens))


def test_nops_are_skipped_and_deep_nesting_is_capped():
    tree = fdt.parse_fdt(blob_with_struct([4, 1, b"\0\0\0\0", 4, 3, 2, 0, b"ab\0\0", 4, 2, 4, 9]))
    assert tree.root.prop("name").value == b"ab"
    ok = [1, b"\0\0\0\0"] + [1, b"n\0\0\0"] * (fdt.MAX_DEPTH - 1) + [2] * fdt.MAX_DEPTH + [9]
    assert fdt.parse_fdt(blob_with_struct(ok)).node("/" + "/".join(["n"] * (fdt.MAX_DEPTH - 1))) is not None
    deep = [1, b"\0\0\0\0"] + [1, b"n\0\0\0"] * 200000 + [9]  # 1.6 MB of nesting: far past any recursion limit
    with pytest.raises(ImageFormatError, match="nested deeper than 64"):
        fdt.parse_fdt(blob_with_struct(deep))


def test_huge_sizes_are_refused_without_allocating(small):
    for field in ("totalsize", "size_dt_struct", "size_dt_strings", "off_dt_struct", "off_dt_strings"):
        with pytest.raises(ImageFormatError):
            fdt.parse_fdt(patched(small, field, 0xFFFFFFFF))
    prop = first_prop_offset(small)
    out = bytearray(small)
    struct.pack_into(">I", out, prop + 4, 0xFFFFFFFF)
    with pytest.raises(ImageFormatError, match="runs past"):
        fdt.parse_fdt(bytes(out))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruption_raises_image_format_error_only(small, data):
    blob = bytearray(small)
    for _round in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(blob) - 8, len(blob)))
    try:
        tree = fdt.parse_fdt(bytes(blob[:cut]))
    except ImageFormatError:
        return
    assert fdt.parse_fdt(fdt.build_fdt(tree)) == tree  # whatever it accepted, it can write back
