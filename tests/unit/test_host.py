"""Reading the host from recorded sysroots (plugins/module_utils/kexec/host.py)."""

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import host as hostmod
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import HostError, KexecError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host, parse_iomem
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import Range

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")
NAMES = sorted(n for n in os.listdir(SYSROOTS) if os.path.isdir(os.path.join(SYSROOTS, n)))
SYNTHETIC = ["ovmf-q35-2g", "ovmf-q35-2g-crash-sb", "seabios-pc-1g", "seabios-q35-2g-crash"]


def copy_root(tmp_path, name="seabios-q35-2g-crash"):
    dst = tmp_path / name
    shutil.copytree(os.path.join(SYSROOTS, name), str(dst))
    return dst


@pytest.mark.parametrize("name", NAMES)
def test_every_recorded_sysroot_reads(name):
    h = Host.read(os.path.join(SYSROOTS, name))
    assert h.arch
    assert h.release and h.cmdline
    assert h.memory_map.total_ram() > 0
    json.dumps(h.to_dict())  # a plain value all the way down
    assert Host.read(os.path.join(SYSROOTS, name)) == h
    if h.crash_region is not None:
        assert h.memory_map.contains_ram(h.crash_region.start, h.crash_region.end)


def test_synthetic_fixtures_are_all_present():
    assert set(SYNTHETIC) <= set(NAMES)


def test_seabios_q35_crash_fields():
    h = Host.read(os.path.join(SYSROOTS, "seabios-q35-2g-crash"))
    assert h.arch == "x86_64"
    assert h.release == "6.8.0-31-generic"
    assert "crashkernel=256M" in h.cmdline
    assert h.crash_region == Range(0x6d000000, 0x7d000000, "Crash kernel")
    assert h.crash_region.size == h.kexec_crash_size == 256 << 20
    assert h.efi is False and h.secure_boot is False and h.acpi_rsdp is None
    assert h.lockdown == "none"
    assert h.kexec_load_disabled is False and h.kexec_loaded is False and h.kexec_crash_loaded is False
    assert len(h.boot_params) == 4096 and h.boot_params[0x202:0x206] == b"HdrS"
    assert h.memory_map.ram() == [Range(0, 0x9fc00), Range(0x100000, 0x7ffdc000)]
    assert h.totalram_pages == h.mem_total // 4096
    assert h.syscalls is None  # no boot/config recorded
    assert h.sysroot == os.path.join(SYSROOTS, "seabios-q35-2g-crash")


def test_iomem_tree_nests_kernel_and_crash_under_ram():
    h = Host.read(os.path.join(SYSROOTS, "seabios-q35-2g-crash"))
    ram = [n for n in h.iomem if n.name == "System RAM" and n.start == 0x100000][0]
    assert ram.end == 0x7ffdc000
    assert [c.name for c in ram.children] == ["Kernel code", "Kernel rodata", "Kernel data", "Kernel bss", "Crash kernel"]
    pci = [n for n in h.iomem if n.name == "PCI Bus 0000:00" and n.start == 0xc0000000][0]
    assert pci.children[0].children[0].name == "bochs-drm"
    mmcfg = [n for n in h.iomem if n.name.startswith("PCI MMCONFIG")][0]
    assert mmcfg.name == "PCI MMCONFIG 0000 [bus 00-ff]"


def test_ovmf_secure_boot_and_lockdown():
    h = Host.read(os.path.join(SYSROOTS, "ovmf-q35-2g-crash-sb"))
    assert h.efi is True and h.secure_boot is True
    assert h.lockdown == "integrity"
    assert h.acpi_rsdp == 0x7eb7d014
    plain = Host.read(os.path.join(SYSROOTS, "ovmf-q35-2g"))
    assert plain.secure_boot is False and plain.crash_region is None
    assert plain.syscalls == {"kexec_load": True, "kexec_file_load": True, "kexec_sig_force": False}
    # OVMF scatters ACPI NVS in low memory; none of it may count as RAM.
    assert not plain.memory_map.contains_ram(0x800000, 0x808000)


def test_firmware_memmap_is_preferred_and_iomem_is_the_fallback(tmp_path):
    root = copy_root(tmp_path)
    with_fw = Host.read(str(root))
    shutil.rmtree(str(root / "sys" / "firmware" / "memmap"))
    iomem_only = Host.read(str(root))
    # iomem hides page 0 as Reserved, the firmware map does not: the views differ there only.
    assert with_fw.memory_map.ram()[0] == Range(0, 0x9fc00)
    assert iomem_only.memory_map.ram()[0] == Range(0x1000, 0x9fc00)
    assert iomem_only.memory_map.ram()[1:] == with_fw.memory_map.ram()[1:]


def test_optional_files_missing_give_none(tmp_path):
    root = tmp_path / "min"
    (root / "proc" / "sys" / "kernel").mkdir(parents=True)
    (root / "proc" / "sys" / "kernel" / "osrelease").write_text("6.1.0\n")
    (root / "proc" / "cmdline").write_text("ro\n")
    (root / "proc" / "iomem").write_text("00001000-0009ffff : System RAM\n00100000-3fffffff : System RAM\n")
    (root / "machine").write_text("aarch64\n")
    h = Host.read(str(root))
    assert h.arch == "aarch64"
    for field in ("lockdown", "kexec_load_disabled", "boot_params", "acpi_rsdp", "kexec_loaded",
                  "kexec_crash_loaded", "kexec_crash_size", "mem_total", "syscalls", "crash_region"):
        assert getattr(h, field) is None, field
    assert h.efi is False and h.secure_boot is False and h.crash_regions == []


def test_arch_from_proc_when_machine_not_recorded(tmp_path):
    root = copy_root(tmp_path)
    os.remove(str(root / "machine"))
    with pytest.raises(HostError, match="uname -m"):
        Host.read(str(root))
    (root / "proc" / "sys" / "kernel" / "arch").write_text("x86_64\n")
    assert Host.read(str(root)).arch == "x86_64"


@pytest.mark.parametrize("rel", ["proc/cmdline", "proc/sys/kernel/osrelease"])
def test_required_files(tmp_path, rel):
    root = copy_root(tmp_path)
    os.remove(str(root / rel))
    with pytest.raises(HostError, match="cannot read"):
        Host.read(str(root))
    os.mkdir(str(root / rel))  # unreadable as a file whoever we are
    with pytest.raises(HostError):
        Host.read(str(root))


def test_no_memory_map_at_all(tmp_path):
    root = copy_root(tmp_path)
    shutil.rmtree(str(root / "sys" / "firmware" / "memmap"))
    os.remove(str(root / "proc" / "iomem"))
    with pytest.raises(HostError, match="memory map"):
        Host.read(str(root))


def test_not_a_directory():
    with pytest.raises(HostError):
        Host.read("/nonexistent/sysroot")


def test_iomem_as_non_root_says_become():
    with pytest.raises(HostError, match="root"):
        parse_iomem("00000000-00000000 : Reserved\n00000000-00000000 : System RAM\n  00000000-00000000 : Kernel code\n")


def test_two_crash_regions_pick_the_largest():
    text = ("00100000-bfffffff : System RAM\n  0f000000-0fffffff : Crash kernel\n"
            "100000000-23fffffff : System RAM\n  200000000-23fffffff : Crash kernel\n")
    nodes = parse_iomem(text)
    crash = [n for root in nodes for n in root.walk() if n.name == "Crash kernel"]
    assert [(c.start, c.end) for c in crash] == [(0xf000000, 0x10000000), (0x200000000, 0x240000000)]


def test_live_host_reads_or_says_why():
    # The development machine may lack pieces; the only acceptable failure is a HostError.
    try:
        h = Host.read("/")
    except HostError:
        return
    assert h.arch == os.uname()[4]


def test_recorder_copies_every_file_host_reads():
    with open(os.path.join(REPO, "scripts", "record_sysroot.sh")) as f:
        script = f.read()
    for rel in hostmod.FILES:
        if rel == "machine":
            assert "uname -m" in script
        elif rel == "pagesize":
            assert "getconf PAGESIZE" in script
        else:
            assert "/" + rel in script, rel
    for rel in hostmod.DIRS + hostmod.EFI_FILES:
        assert "/" + rel in script, rel
    assert "/boot/config-" in script


# -- corrupted inputs: each must give a KexecError, never another exception ---------------------

CORRUPT = [
    ("proc/iomem", b"00000000-zzzz : System RAM\n"),
    ("proc/iomem", b"00001000-0009ffff System RAM\n"),
    ("proc/iomem", b"0009ffff-00001000 : System RAM\n"),
    ("proc/iomem", b"00001000-0009ffff : System RAM\n    00002000-00002fff : Kernel code\n"),
    ("proc/iomem", b"   00001000-0009ffff : System RAM\n"),
    ("proc/iomem", b"\t00001000-0009ffff : System RAM\n"),
    ("proc/iomem", b"\xff\xfe\x00garbage"),
    ("proc/iomem", b"1-2-3 : System RAM\n"),
    ("proc/iomem", b"10000000000000000-10000000000000fff : System RAM\n"),
    # (all-zero addresses, what non-root users read, are tested in test_host_nonroot.py: with a
    # firmware map they are not an error)
    ("sys/firmware/memmap/3/start", b"0xnothex\n"),
    ("sys/firmware/memmap/3/end", b"\n"),
    ("sys/firmware/memmap/3/start", b"0x90000000\n"),
    ("sys/firmware/memmap/3/type", None),
    ("sys/firmware/memmap/0/type", b"\x80\x81\n"),
    ("sys/firmware/memmap/0/end", b"0x1ffffffffffffffff\n"),
    ("sys/kernel/security/lockdown", b"none integrity confidentiality\n"),
    ("sys/kernel/security/lockdown", b"[]\n"),
    ("sys/kernel/kexec_crash_size", b"lots\n"),
    ("proc/sys/kernel/kexec_load_disabled", b"yes\n"),
    ("sys/kernel/kexec_loaded", b"\xff\n"),
    ("sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0b98c3b0e8c", b"\x06\x00"),
    ("sys/firmware/efi/systab", b"ACPI20=0xfoo\n"),
    ("proc/meminfo", b"MemTotal: many kB\n"),
]


def test_all_ram_reserved_is_refused(tmp_path):
    root = copy_root(tmp_path)
    for d in os.listdir(str(root / "sys" / "firmware" / "memmap")):
        (root / "sys" / "firmware" / "memmap" / d / "type").write_text("Reserved\n")
    with pytest.raises(HostError, match="no System RAM"):
        Host.read(str(root))


@pytest.mark.parametrize("rel,data", CORRUPT, ids=["%s-%d" % (c[0].rsplit("/", 1)[-1], i) for i, c in enumerate(CORRUPT)])
def test_corrupted_inputs_give_kexec_errors(tmp_path, rel, data):
    root = copy_root(tmp_path, "ovmf-q35-2g-crash-sb")
    path = root / rel
    if data is None:
        path.unlink()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    with pytest.raises(KexecError):
        Host.read(str(root))


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(
    st.binary(max_size=300),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 66), st.integers(0, 1 << 66),
                       st.sampled_from(["System RAM", "Reserved", "Crash kernel", "", ":"])),
             max_size=8).map(lambda rows: "".join("%s%x-%x : %s\n" % ("  " * d, a, b, n) for d, a, b, n in rows).encode()),
))
def test_fuzzed_iomem_never_escapes_as_another_exception(tmp_path, text):
    root = tmp_path / "fuzz"
    if not root.exists():
        shutil.copytree(os.path.join(SYSROOTS, "seabios-pc-1g"), str(root))
        shutil.rmtree(str(root / "sys" / "firmware" / "memmap"))
    (root / "proc" / "iomem").write_bytes(text)
    try:
        Host.read(str(root))
    except KexecError:
        pass
