"""The next arm64 kernel's device tree, checked with dtc: /chosen rewritten as the kernel's own
kexec_file loader rewrites it, nothing else of the running tree changed, UEFI properties kept,
crash properties in the root's cells, fresh seeds every time; and the purgatory's console."""

import os
import re
import shutil
import struct
import subprocess

import pytest

from arm64_sysroot import booted_dtb, qemu_dtb
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64 import boot
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64 import console as con
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64 import dtb
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import fdt
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import HostError, ImageFormatError

OLD_INITRD = (0x48000000, 0x48000000 + 0x1234567)


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip("%s is not installed (make deps)" % tool)


def dts(blob, tmp_path, name="x.dtb"):
    need("dtc")
    path = tmp_path / name
    path.write_bytes(blob)
    res = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, check=True)
    return res.stdout


def without_chosen(text):
    """The dts minus the /chosen node and the /memreserve/ lines."""
    text = re.sub(r"\n\tchosen \{\n.*?\n\t\};\n", "\n", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.startswith("/memreserve/"))


def chosen_of(text):
    m = re.search(r"\n\tchosen \{\n(.*?)\n\t\};\n", text, re.S)
    assert m, text
    return dict(re.findall(r"^\t\t([^ =;]+)(?: = (.*?))?;$", m.group(1), re.M))


def memreserve(text):
    return [tuple(int(v, 16) for v in m) for m in re.findall(r"^/memreserve/\s+(0x[0-9a-f]+) (0x[0-9a-f]+);", text, re.M)]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dtb")
    blob = qemu_dtb(directory)
    blob = booted_dtb(directory, blob, "root=/dev/vda rw console=ttyAMA0 quiet", initrd=OLD_INITRD,
                      reserve=(OLD_INITRD[0], 0x1235000))  # a firmware reserving the initrd, page-rounded
    return booted_dtb(directory, blob, "root=/dev/vda rw console=ttyAMA0 quiet", initrd=OLD_INITRD,
                      reserve=(0x7EE00000, 0x100000))  # an unrelated reservation (firmware)


def _next(blob, **kwargs):
    tree = fdt.parse_fdt(blob)
    args = dict(initrd=(0x50000000, 0x2000123), kaslr_seed=0x1122334455667788, rng_seed=bytes(range(128)))
    args.update(kwargs)
    tree, removed = dtb.next_tree(tree, len(blob), b"console=ttyAMA0 root=/dev/vda2 \xc3\xa9", **args)
    return dtb.to_blob(tree), removed


def test_chosen_rewritten_everything_else_kept(running, tmp_path):
    before = dts(running, tmp_path, "before.dtb")
    assert chosen_of(before)["kaslr-seed"] == "<0x00 0x00>" and "rng-seed" not in chosen_of(before)
    blob, removed = _next(running)
    after = dts(blob, tmp_path, "after.dtb")
    assert without_chosen(after) == without_chosen(before)
    chosen = chosen_of(after)
    # dtc shows a string with non-ASCII bytes as bytes: exactly the UTF-8 of the command line and a NUL.
    assert bytes.fromhex(chosen["bootargs"].strip("[]")) == "console=ttyAMA0 root=/dev/vda2 \u00e9\0".encode()
    assert chosen["linux,initrd-start"] == "<0x00 0x50000000>" and chosen["linux,initrd-end"] == "<0x00 0x52000123>"
    assert chosen["kaslr-seed"] == "<0x11223344 0x55667788>"
    words = ["0x%x" % struct.unpack(">I", bytes(range(i, i + 4)))[0] for i in range(0, 128, 4)]
    assert chosen["rng-seed"] == "<%s>" % " ".join(words)
    assert chosen["stdout-path"] == '"/pl011@9000000"'
    assert chosen["linux,booted-from-kexec"] == ""  # present, empty (dtc prints no value)
    assert not any(k.startswith(("linux,elfcorehdr", "linux,usable")) for k in chosen)
    # The old initrd's (page-rounded) reservation went, the firmware's stayed, the new initrd is reserved.
    assert memreserve(after) == [(0x7EE00000, 0x100000), (0x50000000, 0x2000123)]
    assert memreserve(before) == [(0x7EE00000, 0x100000), (OLD_INITRD[0], 0x1235000)]
    assert "reservation 0x48000000+0x1235000" in removed and "bootargs" in removed


def test_no_initrd_no_seed(running, tmp_path):
    blob, _removed = _next(running, initrd=None, kaslr_seed=None, rng_seed=None)
    chosen = chosen_of(dts(blob, tmp_path))
    assert not {"linux,initrd-start", "linux,initrd-end", "kaslr-seed", "rng-seed"} & set(chosen)
    assert memreserve(dts(blob, tmp_path)) == [(0x7EE00000, 0x100000)]


def test_fresh_seeds_every_load(running):
    seen = set()
    for dummy in range(3):
        kaslr, rng, warnings = boot.seeds(os.urandom)
        assert warnings == [] and len(rng) == 128 and kaslr.bit_length() <= 64
        seen.add((kaslr, rng))
    assert len(seen) == 3
    assert boot.seeds(lambda n: None) == (None, None, [boot.RNG_WARNING])
    assert "RNG" in boot.RNG_WARNING  # the file method's report filters on it (loader._validate_placement)


UEFI_DTS = """/dts-v1/;
/memreserve/ 0x5f000000 0x20000;
/memreserve/ 0x7c000000 0x10000;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    chosen {
        linux,uefi-system-table = <0x0 0xbfed0018>;
        linux,uefi-mmap-start = <0x0 0xbdbe7018>;
        linux,uefi-mmap-size = <0x1000>;
        linux,uefi-mmap-desc-size = <0x30>;
        linux,uefi-mmap-desc-ver = <0x1>;
        linux,uefi-secure-boot = <0x0>;
        bootargs = "BOOT_IMAGE=/boot/vmlinuz root=/dev/vda2";
        linux,initrd-start = <0x0 0xbd000000>;
        linux,initrd-end = <0x0 0xbd800000>;
        kaslr-seed = <0x0 0x0>;
        linux,ima-kexec-buffer = <0x0 0x5f000000 0x0 0x20000>;
        linux,elfcorehdr = <0x0 0x7c000000 0x0 0x10000>;
        linux,usable-memory-range = <0x0 0x70000000 0x0 0x10000000>;
        linux,kho-fdt = <0x0 0x60000000 0x0 0x1000>;
    };
};
"""


def test_uefi_stub_tree_keeps_the_efi_properties(tmp_path):
    need("dtc")
    (tmp_path / "uefi.dts").write_text(UEFI_DTS)
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(tmp_path / "uefi.dtb"), str(tmp_path / "uefi.dts")],
                   check=True, stderr=subprocess.DEVNULL)
    running = (tmp_path / "uefi.dtb").read_bytes()
    blob, removed = _next(running, initrd=None)
    before, after = chosen_of(dts(running, tmp_path)), chosen_of(dts(blob, tmp_path))
    for name in before:
        if name.startswith("linux,uefi-"):
            assert after[name] == before[name], name
    gone = {"linux,ima-kexec-buffer", "linux,elfcorehdr", "linux,usable-memory-range", "linux,kho-fdt",
            "linux,initrd-start", "linux,initrd-end"}
    assert not gone & set(after) and gone <= set(removed)
    # Both reservations were this boot's (IMA buffer, the crashed kernel's core header): gone.
    assert memreserve(dts(blob, tmp_path)) == []


def test_capture_kernel_properties_in_root_cells(running, tmp_path):
    usable = [(0x6D000000, 0x10000000), (0x2000000, 0x4000000)]
    blob, _removed = _next(running, elfcorehdr=(0x7FFF0000, 0x1230), usable_memory=usable)
    text = dts(blob, tmp_path)
    chosen = chosen_of(text)
    assert chosen["linux,elfcorehdr"] == "<0x00 0x7fff0000 0x00 0x1230>"
    assert chosen["linux,usable-memory-range"] == "<0x00 0x6d000000 0x00 0x10000000 0x00 0x2000000 0x00 0x4000000>"
    assert (0x7FFF0000, 0x1230) not in memreserve(text)  # the capture kernel reserves it from /chosen


def test_limits():
    with pytest.raises(ImageFormatError, match="at most 2047"):
        dtb.check_cmdline("x" * 2048)
    assert dtb.check_cmdline("y" * 2047) == b"y" * 2047
    assert [dtb.alignment(n) for n in (1, 4096, 4097, 9000, 2 << 20)] == [4096, 4096, 8192, 16384, 2 << 20]
    big = fdt.DeviceTree()
    big.root.set("blob", bytes(2 << 20))
    with pytest.raises(ImageFormatError, match="more than the 2 MiB"):
        dtb.to_blob(big)
    with pytest.raises(HostError, match="no device tree"):
        dtb.running_tree(object())


# ---------------------------------------------------------------------------------------------
# the purgatory's console

def test_console_from_qemu_stdout_path(running):
    found = con.from_tree(fdt.parse_fdt(running))
    assert (found.kind, found.base, found.width) == (con.PL011, 0x9000000, 4)


SERIAL_DTS = """/dts-v1/;
/ {
    #address-cells = <1>;
    #size-cells = <1>;
    aliases { serial0 = "/soc/serial@1c28000"; };
    chosen { stdout-path = "serial0:115200n8"; };
    soc {
        #address-cells = <1>;
        #size-cells = <1>;
        ranges;
        serial@1c28000 { compatible = "snps,dw-apb-uart"; reg = <0x1c28000 0x400>; reg-shift = <2>; reg-io-width = <4>; };
        serial@2000 { compatible = "ns16550a"; reg = <0x2000 0x100>; };
    };
    bus {
        #address-cells = <1>;
        #size-cells = <1>;
        ranges = <0x0 0x10000000 0x100000>;
        serial@0 { compatible = "arm,pl011"; reg = <0x0 0x1000>; };
    };
};
"""


def _tree(tmp_path, text):
    need("dtc")
    (tmp_path / "s.dts").write_text(text)
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(tmp_path / "s.dtb"), str(tmp_path / "s.dts")],
                   check=True, stderr=subprocess.DEVNULL)
    return fdt.parse_fdt((tmp_path / "s.dtb").read_bytes())


def test_console_through_an_alias_on_an_identity_bus(tmp_path):
    tree = _tree(tmp_path, SERIAL_DTS)
    assert con.from_tree(tree) == con.Console(con.NS16550, 0x1c28000, 2, 4, "device tree /soc/serial@1c28000")
    tree.node("/chosen").set_string("stdout-path", "/soc/serial@2000")
    assert (con.from_tree(tree).kind, con.from_tree(tree).shift, con.from_tree(tree).width) == (con.NS16550, 0, 1)
    tree.node("/chosen").set_string("stdout-path", "/bus/serial@0")
    assert con.from_tree(tree) is None  # behind a translating bus: no guessed address
    tree.node("/chosen").remove("stdout-path")
    assert con.from_tree(tree) is None


def spcr(kind, address, access=3, width=32):
    table = bytearray(80)
    table[0:4] = b"SPCR"
    struct.pack_into("<I", table, 4, len(table))
    table[36] = kind
    struct.pack_into("<BBBBQ", table, 40, 0, width, 0, access, address)
    return bytes(table)


def test_console_from_acpi_spcr():
    assert con.from_spcr(spcr(0x03, 0x9000000)) == con.Console(con.PL011, 0x9000000, 2, 4, "ACPI SPCR")
    assert con.from_spcr(spcr(0x0E, 0x2B000000)).kind == con.PL011
    assert con.from_spcr(spcr(0x12, 0x3F00000, access=1, width=8)) == con.Console(con.NS16550, 0x3F00000, 0, 1, "ACPI SPCR")
    assert con.from_spcr(spcr(0x00, 0x3F00000)).shift == 2
    assert con.from_spcr(spcr(0x20, 0x3F00000)) is None  # a console type we cannot drive
    assert con.from_spcr(b"SPCR") is None and con.from_spcr(None) is None
