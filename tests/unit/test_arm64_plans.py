"""`fleetboot-kexec plan --json` for arm64 hosts (synthetic trees around QEMU's device tree; the
recorded lab trees are in test_recorded_plans.py), checked by code of its own against the kernel's
segment rules and the arm64 boot protocol, the device tree read back with fdtget, the crash
header with pyelftools."""

import io
import json
import os
import struct
import subprocess
import sys

import pytest

from tests.unit.arm64_rules import assert_arm64_rules, fdtget, u64_cells, usable_ram
from arm64_sysroot import GiB, MiB, RAM_START, booted_dtb, make_sysroot, qemu_dtb
from tests.unit.conftest import newc_initrd
from tests.kernels import KernelUnavailable, kernel_package

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(REPO, "bin", "fleetboot-kexec")
CRASH = (0x6D000000, 0x7D000000)


@pytest.fixture(scope="module")
def debian():
    try:
        return kernel_package("6.1.0-54-arm64"), kernel_package("6.1.0-56-arm64")
    except KernelUnavailable as err:
        pytest.skip(str(err).splitlines()[0])


@pytest.fixture(scope="module")
def initrd(tmp_path_factory):
    path = tmp_path_factory.mktemp("initrd") / "initrd.img"
    path.write_bytes(newc_initrd(20 << 20))
    return str(path)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, debian):
    base = tmp_path_factory.mktemp("arm64")
    with open(debian[0].config) as f:
        config = f.read()
    fdt = booted_dtb(base, qemu_dtb(base), "root=/dev/vda rw console=ttyAMA0", initrd=(0x48000000, 0x48f00000))
    return {"normal": make_sysroot(base / "virt-2g", fdt, config=config),
            "crash": make_sysroot(base / "virt-2g-crash", fdt, crash=CRASH, config=config,
                                  cmdline="root=/dev/vda rw console=ttyAMA0 crashkernel=256M"),
            "no-config": make_sysroot(base / "virt-1g", fdt, ram_size=1 * GiB)}


def plan(sysroot, kernel, initrd, *extra, expect=0):
    res = subprocess.run([sys.executable, CLI, "plan", "--json", "--kernel", kernel, "--initrd", initrd,
                          "--reuse-cmdline", "--sysroot", sysroot] + list(extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert res.returncode == expect, res.stderr
    return json.loads(res.stdout) if expect == 0 else res.stderr


def test_normal_plan(hosts, debian, initrd, tmp_path):
    new = debian[1]
    report = plan(hosts["normal"], new.vmlinuz, initrd, "--method", "classic", "--save-segments", str(tmp_path / "s"))
    assert [s["what"] for s in report["segments"]] == ["kernel", "initrd", "dtb", "purgatory"]
    ram = usable_ram(hosts["normal"])
    segs = assert_arm64_rules(report, ram)
    assert segs["kernel"]["mem"] == 0x42000000  # the lowest 2 MiB aligned hole that holds image_size
    with open(new.vmlinuz, "rb") as f:
        image_size = struct.unpack_from("<Q", f.read(64), 16)[0]
    assert segs["kernel"]["memsz"] == image_size
    blob = open(segs["dtb"]["file"], "rb").read()
    assert u64_cells(fdtget(blob, tmp_path, "linux,initrd-start")) == segs["initrd"]["mem"]
    assert u64_cells(fdtget(blob, tmp_path, "linux,initrd-end")) == segs["initrd"]["mem"] + os.path.getsize(initrd)
    assert fdtget(blob, tmp_path, "bootargs", "s") == report["cmdline"] == "root=/dev/vda rw console=ttyAMA0"
    assert u64_cells(fdtget(blob, tmp_path, "kaslr-seed")) != 0
    assert fdtget(blob, tmp_path, "linux,elfcorehdr") is None


def test_auto_is_classic_and_file_is_refused_before_any_syscall(hosts, debian, initrd):
    kernel = debian[1].vmlinuz
    assert plan(hosts["normal"], kernel, initrd)["method"] == "classic"
    err = plan(hosts["normal"], kernel, initrd, "--method", "file", expect=1)
    assert "--method file is refused on this host: the kernel is built without kexec_file_load (CONFIG_KEXEC_FILE)" \
        in err and "use --method classic (or auto)" in err and "Traceback" not in err
    # Without the kernel's config the host cannot tell: the plan is made (the syscall says ENOSYS).
    assert plan(hosts["no-config"], kernel, initrd, "--method", "file")["method"] == "file"


def test_crash_plan_inside_the_region_with_its_core_header(hosts, debian, initrd, tmp_path):
    elftools = pytest.importorskip("elftools.elf.elffile")
    report = plan(hosts["crash"], debian[1].vmlinuz, initrd, "--crash", "--method", "classic",
                  "--save-segments", str(tmp_path / "c"))
    segs = assert_arm64_rules(report, usable_ram(hosts["crash"]) + [CRASH], window=CRASH)
    assert segs["kernel"]["mem"] == CRASH[0]
    assert "crashkernel=" not in report["cmdline"] and "elfcorehdr=" not in report["cmdline"]
    assert report["cmdline"].endswith("irqpoll nr_cpus=1 reset_devices")
    blob = open(segs["dtb"]["file"], "rb").read()
    hdr = segs["elfcorehdr"]
    addr, size = [int(w, 16) for w in fdtget(blob, tmp_path, "linux,elfcorehdr").split()][1::2]
    assert addr == hdr["mem"] and size == hdr["bufsz"]
    usable = [int(w, 16) for w in fdtget(blob, tmp_path, "linux,usable-memory-range").split()]
    assert (usable[1], usable[3]) == (CRASH[0], CRASH[1] - CRASH[0])
    with open(hdr["file"], "rb") as f:
        core = elftools.ELFFile(io.BytesIO(f.read()))
    assert core["e_type"] == "ET_CORE" and core["e_machine"] == "EM_AARCH64"
    notes = [p for p in core.iter_segments() if p["p_type"] == "PT_NOTE"]
    loads = [p for p in core.iter_segments() if p["p_type"] == "PT_LOAD"]
    assert len(notes) == 3  # two CPUs and vmcoreinfo
    text = loads[0]
    assert text["p_vaddr"] == 0xffff800008000000 + 0x1230000 and text["p_paddr"] == 0x40210000
    ram = [(p["p_paddr"], p["p_paddr"] + p["p_memsz"]) for p in loads[1:]]
    assert ram == [(RAM_START, CRASH[0]), (CRASH[1], RAM_START + 2 * GiB)]
    for p in loads[1:]:  # the linear map: PAGE_OFFSET + (paddr - PHYS_OFFSET)
        assert p["p_vaddr"] == 0xffff000000000000 + p["p_paddr"] - RAM_START and p["p_offset"] == p["p_paddr"]


def test_crash_kernel_that_does_not_fit_is_refused_with_both_sizes(hosts, debian, tmp_path):
    big = tmp_path / "big.img"
    big.write_bytes(newc_initrd(1024) + bytes(240 << 20))
    err = plan(hosts["crash"], debian[1].vmlinuz, str(big), "--crash", expect=1)
    assert "does not fit the crash region" in err and "holds 256.0 MiB" in err, err


def test_an_old_text_offset_is_honoured(hosts, debian, initrd, tmp_path):
    with open(debian[1].vmlinuz, "rb") as f:
        image = bytearray(f.read())
    struct.pack_into("<Q", image, 8, 0x80000)  # what kernels before 5.8 said
    struct.pack_into("<Q", image, 24, 0x2)  # and no "anywhere" placement flag
    path = tmp_path / "Image-old"
    path.write_bytes(bytes(image))
    report = plan(hosts["normal"], str(path), initrd, "--method", "classic")
    kernel = report["segments"][0]
    assert kernel["what"] == "kernel" and kernel["mem"] % (2 * MiB) == 0x80000
    assert_arm64_rules(dict(report, segments=[s for s in report["segments"] if s["what"] != "kernel"] +
                            [dict(kernel, mem=kernel["mem"] - 0x80000)]), usable_ram(hosts["normal"]))


def test_a_gzip_image_plans_like_the_image(hosts, debian, initrd, tmp_path):
    import gzip  # pylint: disable=import-outside-toplevel
    path = tmp_path / "Image.gz"
    with open(debian[1].vmlinuz, "rb") as f:
        path.write_bytes(gzip.compress(f.read(), 1))
    gz = plan(hosts["normal"], str(path), initrd, "--method", "classic")
    raw = plan(hosts["normal"], debian[1].vmlinuz, initrd, "--method", "classic")
    strip = [(s["what"], s["mem"], s["memsz"]) for s in gz["segments"]]
    assert strip == [(s["what"], s["mem"], s["memsz"]) for s in raw["segments"]]
    assert gz["segments"][0]["sha256"] == raw["segments"][0]["sha256"]


UEFI_STUB_DTS = """/dts-v1/;
/ {
    #address-cells = <2>;
    #size-cells = <2>;
    chosen {
        linux,uefi-system-table = <0x0 0xbfed0018>;
        linux,uefi-mmap-start = <0x0 0xbdbe7018>;
        linux,uefi-mmap-size = <0x1000>;
        linux,uefi-mmap-desc-size = <0x30>;
        linux,uefi-mmap-desc-ver = <0x1>;
        bootargs = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-54-arm64 root=/dev/vda2 ro";
        linux,initrd-start = <0x0 0xbc000000>;
        linux,initrd-end = <0x0 0xbc800000>;
        kaslr-seed = <0x0 0x0>;
    };
};
"""


def test_uefi_acpi_host_keeps_the_efi_properties_and_finds_the_spcr_console(debian, initrd, tmp_path):
    """An ACPI host booted through UEFI: the EFI stub's tree (no hardware in it, no stdout-path),
    the EFI memory map reserved inside System RAM, the console in ACPI's SPCR table."""
    from arm64_sysroot import write  # pylint: disable=import-outside-toplevel
    (tmp_path / "stub.dts").write_text(UEFI_STUB_DTS)
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(tmp_path / "stub.dtb"), str(tmp_path / "stub.dts")],
                   check=True, stderr=subprocess.DEVNULL)
    stub = (tmp_path / "stub.dtb").read_bytes()
    with open(debian[0].config) as f:
        root = make_sysroot(tmp_path / "uefi", stub, config=f.read(), efi=True,
                            extra_reserved=[(0xbdbe7000, 0xbdbe9000)])
    spcr = bytearray(80)
    spcr[0:4], spcr[36] = b"SPCR", 3
    struct.pack_into("<BBBBQ", spcr, 40, 0, 32, 0, 3, 0x9000000)
    write(root, "sys/firmware/acpi/tables/SPCR", bytes(spcr))
    report = plan(root, debian[1].vmlinuz, initrd, "--save-segments", str(tmp_path / "s"))
    segs = assert_arm64_rules(report, usable_ram(root))
    assert not any(s["mem"] < 0xbdbe9000 and 0xbdbe7000 < s["mem"] + s["memsz"] for s in report["segments"])
    blob = open(segs["dtb"]["file"], "rb").read()
    for prop, value in (("linux,uefi-system-table", "0 bfed0018"), ("linux,uefi-mmap-start", "0 bdbe7018"),
                        ("linux,uefi-mmap-size", "1000"), ("linux,uefi-mmap-desc-size", "30"),
                        ("linux,uefi-mmap-desc-ver", "1")):
        assert fdtget(blob, tmp_path, prop) == value, prop
    assert u64_cells(fdtget(blob, tmp_path, "linux,initrd-start")) == segs["initrd"]["mem"]
    # The purgatory got SPCR's PL011 (kind 1 at 0x9000000): its console words in the linked segment.
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64 import purgatory as apurg  # noqa
    purgatory = open(segs["purgatory"]["file"], "rb").read()
    obj = apurg.load_object()
    words = [struct.unpack_from("<Q", purgatory, obj.symbol_offset(n))[0] for n in apurg.CONSOLE_SYMBOLS]
    assert words == [1, 0x9000000, 2, 4]
