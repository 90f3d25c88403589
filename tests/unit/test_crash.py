"""Crash loads with kexec_load: ELF core header, backup region, capture memory map, command line.

The recorded sysroots come from lab VMs booted with crashkernel=256M (2 CPUs); the header is read
back with pyelftools, an independent ELF reader, and checked against /proc/iomem of the same VM.
"""

import io
import os
import shutil
import struct

import pytest
from elftools.elf.elffile import ELFFile

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.request import Request
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import cmdline as kcmdline
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import loader
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import bootparams
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import crash as xcrash
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import purgatory as xpurgatory
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.crash import facts as crash_facts
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.crash import fit as crash_fit
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.purgatory import BACKUP_SYMBOLS
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as sc
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import HostError, KexecError, PlanError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import RAM, Range, subtract
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import CRASH_CONTROL_HEADROOM
from tests.unit.conftest import newc_initrd  # noqa: E402

from tests.unit.test_loader import StubStages, make_host

HERE = os.path.dirname(os.path.abspath(__file__))
SYSROOTS = os.path.join(HERE, "..", "fixtures", "sysroots")
RECORDED = ["lab-seabios-pc-2g-crash", "lab-ovmf-pc-2g-crash"]


def ranges_union(pairs):
    out = []
    for s, e in sorted(pairs):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


@pytest.fixture(scope="module")
def debian_kernel():
    from tests.kernels import kernel_package
    try:
        return kernel_package()
    except Exception as exc:  # no network and no cache: the synthetic tests below still run
        pytest.skip("no Debian kernel package available: %s" % exc)


def plan_crash(sysroot, kernel, initrd=None, cmdline=""):
    host = Host.read(sysroot)
    req = Request(kernel, initrd=initrd, cmdline=cmdline, kind="crash", method="classic")
    prep = loader.make_plan(req, host)
    return host, prep


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_host_core_header_covers_its_ram(name, debian_kernel, tmp_path):
    sysroot = os.path.join(SYSROOTS, name)
    host, prep = plan_crash(sysroot, debian_kernel.vmlinuz, cmdline="console=ttyS0 root=/dev/vda rw")
    with prep:
        report = prep.to_dict()
        segs = {s.what: s for s in prep.segments}
        region = host.crash_region
        # Every segment inside the region, the top kept free for the control page.
        for s in prep.segments:
            assert region.start <= s.mem and s.mem + s.memsz <= region.end - CRASH_CONTROL_HEADROOM, s.what
        hdr = segs["elfcorehdr"]
        assert "elfcorehdr=%#x" % hdr.mem in report["cmdline"].split()
        elf = ELFFile(io.BytesIO(bytes(hdr.buf)))
        assert elf.header.e_type == "ET_CORE" and elf.header.e_machine == "EM_X86_64"
        phdrs = [elf.get_segment(i).header for i in range(elf.num_segments())]
        notes = [(p.p_offset, p.p_filesz) for p in phdrs if p.p_type == "PT_NOTE"]
        loads = [p for p in phdrs if p.p_type == "PT_LOAD"]

        # One note per CPU (what sysfs said, recorded independently), plus vmcoreinfo.
        cpu_dir = os.path.join(sysroot, "sys/devices/system/cpu")
        want = []
        for cpu in sorted(d for d in os.listdir(cpu_dir) if d.startswith("cpu")):
            with open(os.path.join(cpu_dir, cpu, "crash_notes")) as f:
                addr = int(f.read(), 16)
            with open(os.path.join(cpu_dir, cpu, "crash_notes_size")) as f:
                want.append((addr, int(f.read())))
        with open(os.path.join(sysroot, "sys/kernel/vmcoreinfo")) as f:
            a, s = f.read().split()
        want.append((int(a, 16), int(s, 16)))
        assert notes == want and len(want) == 3

        # The kernel text mapping first, at its KASLR virtual address.
        assert loads[0].p_vaddr >= xcrash.KERNEL_MAP_START
        code = [n for r in host.iomem for n in r.walk() if n.name == "Kernel code"][0]
        assert loads[0].p_paddr == code.start

        # The other PT_LOADs: exactly iomem's System RAM minus the crash region, no more, no less.
        ram = [(n.start, n.end) for n in host.iomem if n.name == "System RAM"]
        expect = [(r.start, r.end) for r in subtract([Range(s, e) for s, e in ram], [(region.start, region.end)])]
        got = ranges_union((p.p_paddr, p.p_paddr + p.p_memsz) for p in loads[1:])
        assert got == ranges_union(expect)

        # The low range is read from the backup copy, everything else from where it was.
        backup = segs["backup"]
        for p in loads[1:]:
            assert p.p_filesz == p.p_memsz
            if p.p_paddr < xcrash.BACKUP_LIMIT:
                assert p.p_offset == backup.mem + (p.p_paddr - report["crash"]["backup"]["src"])
                assert p.p_offset + p.p_memsz <= backup.mem + backup.memsz
            else:
                assert p.p_offset == p.p_paddr


@pytest.mark.parametrize("name", RECORDED)
def test_capture_e820_shows_only_crash_region_low_ram_and_firmware_ranges(name, debian_kernel):
    host, prep = plan_crash(os.path.join(SYSROOTS, name), debian_kernel.vmlinuz)
    with prep:
        segs = {s.what: s for s in prep.segments}
        zero = bootparams.parse_zero_page(bytes(segs["boot_params"].buf))
        e820 = [(a, a + n, t) for a, n, t in zero["e820"]]
        ram = [(s, e) for s, e, t in e820 if t == bootparams.E820_RAM]
        region = host.crash_region
        for s, e in ram:
            assert e <= xcrash.BACKUP_LIMIT or (region.start <= s and e <= region.end), (hex(s), hex(e))
        # Header and backup copy are reserved, never RAM the capture kernel could allocate.
        for what in ("elfcorehdr", "backup"):
            seg = segs[what]
            assert not any(s < seg.mem + seg.memsz and seg.mem < e for s, e in ram), what
            assert any(s <= seg.mem and seg.mem + seg.memsz <= e for s, e, t in e820 if t == bootparams.E820_RESERVED)
        # Every non-RAM range of the firmware map is passed on unchanged (ACPI, NVS, reserved).
        firmware = [(r.start, r.end) for r in host.memory_map.ranges if r.type != RAM]
        for rng in firmware:
            assert rng in [(s, e) for s, e, t in e820 if t != bootparams.E820_RAM]


def test_purgatory_gets_the_backup_copy(debian_kernel):
    host, prep = plan_crash(os.path.join(SYSROOTS, "lab-seabios-pc-2g-crash"), debian_kernel.vmlinuz)
    with prep:
        segs = {s.what: s for s in prep.segments}
        obj = xpurgatory.load_object()
        image = bytes(segs["purgatory"].buf)
        values = [struct.unpack_from("<Q", image, obj.symbol_offset(n))[0] for n in BACKUP_SYMBOLS]
        assert values == [0x1000, segs["backup"].mem, 0x9FC00 - 0x1000]
        assert segs["backup"].bufsz == 0 and segs["backup"].memsz >= values[2]
        assert prep.flags & sc.KEXEC_ON_CRASH


def test_normal_load_leaves_the_backup_copy_off(debian_kernel):
    host = Host.read(os.path.join(SYSROOTS, "lab-seabios-pc-2g-crash"))
    with loader.make_plan(Request(debian_kernel.vmlinuz, method="classic"), host) as prep:
        seg = [s for s in prep.segments if s.what == "purgatory"][0]
        obj = xpurgatory.load_object()
        assert [struct.unpack_from("<Q", bytes(seg.buf), obj.symbol_offset(n))[0] for n in BACKUP_SYMBOLS] == [0, 0, 0]
        assert "elfcorehdr" not in [s.what for s in prep.segments]


def test_link_refuses_a_backup_outside_the_plan():
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import PurgatoryError
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import Plan
    plan = Plan([Range(0, 0x80000000)], kind="crash", crash_region=(0x6D000000, 0x7D000000))
    seg = plan.reserve("backup", 0x9F000)
    seg.set_buffer(b"")
    with pytest.raises(PurgatoryError, match="lies in no segment"):
        xpurgatory.link(plan, 0x6E000200, 0x6E100000, backup=(0x1000, 0x10000000, 0x9E000))
    with pytest.raises(PurgatoryError, match="overlaps its source"):
        xpurgatory.link(plan, 0x6E000200, 0x6E100000, backup=(seg.mem + 0x1000, seg.mem, 0x9E000))
    assert plan.segment("purgatory") is None


def shrink_crash_region(tmp_path, name, size):
    root = tmp_path / name
    shutil.copytree(os.path.join(SYSROOTS, name), str(root))
    iomem = root / "proc" / "iomem"
    text = iomem.read_text()
    start = 0x6E000000
    text = text.replace("6e000000-7dffffff : Crash kernel", "%08x-%08x : Crash kernel" % (start, start + size - 1))
    iomem.write_text(text)
    return str(root)


@pytest.mark.parametrize("method", ["classic", "file"])
def test_too_small_region_is_refused_with_both_sizes_before_any_syscall(method, debian_kernel, tmp_path):
    sysroot = shrink_crash_region(tmp_path, "lab-seabios-pc-2g-crash", 32 << 20)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(newc_initrd(24 << 20))
    fake = sc.FakeSyscalls("x86_64")
    host = Host.read(sysroot)
    req = Request(debian_kernel.vmlinuz, initrd=str(initrd), kind="crash", method=method)
    with pytest.raises(PlanError) as info:
        loader.load(req, fake, host)
    msg = str(info.value)
    assert "does not fit the crash region" in msg and "holds 32.0 MiB" in msg and "initrd 24.0 MiB" in msg
    assert "crashkernel=" in msg
    assert fake.calls == []


def test_check_fits_counts_kernel_initrd_and_overhead():
    region = Range(0x6D000000, 0x6D000000 + (100 << 20), "Crash kernel")
    need = crash_fit.check_fits(region, 60 << 20, 30 << 20)
    assert need == (60 << 20) + (30 << 20) + crash_fit.LOADER_OVERHEAD
    with pytest.raises(PlanError, match=r"needs 100\.0 MiB .* holds 100\.0 MiB"):
        crash_fit.check_fits(region, 60 << 20, (38 << 20) + 1)


def test_stub_load_through_the_fake_reserves_header_and_backup(tmp_path):
    kernel = tmp_path / "stub-kernel"
    kernel.write_bytes(b"K" * 8192)  # StubStages takes any bytes as a kernel
    fake = sc.FakeSyscalls("x86_64")
    report = loader.load(Request(str(kernel), kind="crash"), fake, make_host(), stages=StubStages())
    whats = [s["what"] for s in report["segments"]]
    assert whats[:2] == ["backup", "elfcorehdr"] and whats[-1] == "purgatory"
    assert report["crash"]["backup"] == {"src": 0, "dst": report["segments"][0]["mem"], "len": 0x9F000}
    assert fake.calls[-1]["flags"] & sc.KEXEC_ON_CRASH


def test_capture_options_keep_the_users_own():
    assert kcmdline.add_capture_options("root=/dev/vda nr_cpus=4", xcrash.DEFAULT_CAPTURE_OPTIONS) == \
        "root=/dev/vda nr_cpus=4 irqpoll reset_devices"
    assert kcmdline.add_capture_options('a="x y"', "") == 'a="x y"'


def test_cpu_list_and_sysfs_errors(tmp_path):
    assert crash_facts.parse_cpu_list("0-3,8\n") == [0, 1, 2, 3, 8]
    assert crash_facts.parse_cpu_list("") == []
    with pytest.raises(HostError, match="cannot parse the CPU list"):
        crash_facts.parse_cpu_list("0-x")
    # A corrupted list is refused by its size, never expanded into billions of numbers.
    for huge in ("0-4294967295", "0-65535,0-65535", "5-3"):
        with pytest.raises(HostError, match="more CPUs than Linux supports"):
            crash_facts.parse_cpu_list(huge)
    root = tmp_path / "root"
    (root / "sys/devices/system/cpu/cpu0").mkdir(parents=True)
    (root / "sys/devices/system/cpu/possible").write_text("0-1\n")
    with pytest.raises(HostError, match="CONFIG_CRASH_DUMP, or this is not root"):
        crash_facts.read_crash_notes(str(root))
    (root / "sys/devices/system/cpu/cpu0/crash_notes").write_text("7e03a400\n")
    # cpu1 is possible but not present: no directory, no note, no error.
    assert crash_facts.read_crash_notes(str(root)) == [(0, 0x7E03A400, 4096)]
    assert crash_facts.read_vmcoreinfo(str(root)) is None


def test_kcore_layout_from_recorded_headers():
    with open(os.path.join(SYSROOTS, "lab-seabios-pc-2g-crash", "proc", "kcore"), "rb") as f:
        text, page_offset = xcrash.parse_kcore_layout(f.read())
    assert text["vaddr"] % 0x200000 == 0 and xcrash.KERNEL_MAP_START <= text["vaddr"] < xcrash.KERNEL_MAP_END
    assert text["paddr"] == 0x10E00000 and page_offset % (1 << 30) == 0
    assert xcrash.parse_kcore_layout(b"not an elf") == (None, None)


def test_plan_refuses_a_segment_in_the_control_page_headroom():
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import Plan
    plan = Plan([Range(0, 0x80000000)], kind="crash", crash_region=(0x6D000000, 0x7D000000))
    plan.add_segment_at("kernel", b"k" * 4096, 0x7D000000 - 0x1000, 0x1000)
    with pytest.raises(PlanError, match="kept free for the kernel's control page"):
        plan.check()
    assert isinstance(PlanError("x"), KexecError)
