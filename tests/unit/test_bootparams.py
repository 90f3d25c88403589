"""The zero page we build: header copy, e820 (+ SETUP_E820_EXT), cmdline, initrd, ACPI, EFI."""

import os
import struct

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import bootparams as bp
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import efi as efimod
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import ImageFormatError, KexecError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64.bzimage import BzImage, SetupHeader
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import MemoryMap, Range
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import Plan

ADDR = 0x7FFF0000


def _sd_chain(data, base, head):
    """Walk a setup_data chain inside our segment: [(type, payload bytes)]."""
    out = []
    while head:
        off = head - base
        nxt, typ, ln = bp.SETUP_DATA_HDR.unpack_from(data, off)
        out.append((typ, bytes(data[off + 16:off + 16 + ln])))
        head = nxt
    return out


@pytest.fixture
def header(vmlinuz):
    return SetupHeader.parse(vmlinuz)


def test_header_copied_and_owned_fields_patched(header, qemu_host):
    built = bp.build_boot_params(header, qemu_host.memory_map, ADDR, "console=ttyS0",
                                 initrd_addr=0x12345000, initrd_size=0x1000)
    data = built.data
    assert len(data) % 16 == 0 and len(data) >= 4096 + len("console=ttyS0") + 1
    zp = bp.parse_zero_page(data)
    assert zp["header"] == b"HdrS" and zp["version"] == header.version
    owned = {0x210, 0x211, 0x218, 0x219, 0x21A, 0x21B, 0x21C, 0x21D, 0x21E, 0x21F, 0x224, 0x225,
             0x228, 0x229, 0x22A, 0x22B, 0x23C, 0x23D, 0x23E, 0x23F} | set(range(0x250, 0x258))
    for off in range(0x1F1, header.header_end):
        if off not in owned:
            assert data[off] == header.raw[off - 0x1F1], hex(off)
    assert zp["type_of_loader"] == 0xFF
    assert zp["loadflags"] == bp.LOADED_HIGH
    assert zp["sentinel"] == 0
    assert zp["cmd_line_ptr"] == ADDR + 4096 == built.cmdline_addr
    assert data[4096:4096 + 14] == b"console=ttyS0\0"
    assert zp["ramdisk_image"] == 0x12345000 and zp["ramdisk_size"] == 0x1000
    assert zp["setup_data"] == 0 and not built.efi
    # no running boot_params recorded: an 80x25 VGA text console is described
    assert data[0x07] == 80 and data[0x0E] == 25 and data[0x0F] == 1


def test_e820_from_memory_map(header, qemu_host):
    built = bp.build_boot_params(header, qemu_host.memory_map, ADDR, "")
    zp = bp.parse_zero_page(built.data)
    want = [(r.start, r.size, bp.e820_type(r.type)) for r in qemu_host.memory_map.ranges]
    assert zp["e820"] == want
    assert zp["e820_entries"] == len(want)
    types = {t for dummy, dummy, t in zp["e820"]}
    assert types == {bp.E820_RAM, bp.E820_RESERVED}
    # legacy sizes: RAM from 1 MiB to 3 GiB
    assert zp["alt_mem_k"] == ((0xBFFE0000 - 1) >> 10) - 1024
    assert zp["ext_mem_k"] == 0xFC00


def test_e820_type_names():
    assert bp.e820_type("System RAM") == 1
    assert bp.e820_type("Reserved") == 2
    assert bp.e820_type("ACPI Tables") == 3
    assert bp.e820_type("ACPI Non-volatile Storage") == 4
    assert bp.e820_type("Unusable memory") == 5
    assert bp.e820_type("Persistent Memory") == 7
    assert bp.e820_type("Persistent Memory (legacy)") == 12
    assert bp.e820_type("Soft Reserved") == 0xEFFFFFFF
    assert bp.e820_type("PCI Bus 0000:00") == 2
    assert bp.e820_type(3) == 3


def test_e820_overflow_goes_to_setup_e820_ext(header):
    ranges = [Range(i * 0x200000, i * 0x200000 + 0x100000, "System RAM" if i % 2 else "Reserved")
              for i in range(300)]
    built = bp.build_boot_params(header, MemoryMap(ranges), ADDR, "x")
    zp = bp.parse_zero_page(built.data)
    assert zp["e820_entries"] == 128
    chain = _sd_chain(built.data, ADDR, zp["setup_data"])
    assert [t for t, dummy in chain] == [bp.SETUP_E820_EXT]
    payload = chain[0][1]
    assert len(payload) == 20 * (300 - 128)
    ext = [bp.E820_ENTRY.unpack_from(payload, i * 20) for i in range(300 - 128)]
    allent = zp["e820"] + ext
    assert allent == [(r.start, r.size, bp.e820_type(r.type)) for r in ranges]


def test_pointers_above_4g_use_ext_fields(header, qemu_host):
    addr = 0x13FFFE000
    built = bp.build_boot_params(header, qemu_host.memory_map, addr, "a",
                                 initrd_addr=0x123456789000, initrd_size=0x100000001)
    d = built.data
    assert struct.unpack_from("<I", d, 0x228)[0] == (addr + 4096) & 0xFFFFFFFF
    assert struct.unpack_from("<I", d, 0xC8)[0] == (addr + 4096) >> 32
    assert struct.unpack_from("<I", d, 0x218)[0] == 0x56789000
    assert struct.unpack_from("<I", d, 0xC0)[0] == 0x1234
    assert struct.unpack_from("<I", d, 0x21C)[0] == 1
    assert struct.unpack_from("<I", d, 0xC4)[0] == 1


def test_cmdline_size_checked(header, qemu_host):
    with pytest.raises(ImageFormatError, match="3000 bytes .*at most 2047"):
        bp.build_boot_params(header, qemu_host.memory_map, ADDR, "y" * 3000)


def _running_boot_params(rsdp=0, efi=None, subarch=0):
    zp = bytearray(4096)
    zp[0:0x40] = bytes(range(0x40))       # screen_info recognisable
    struct.pack_into("<Q", zp, 0x70, rsdp)
    zp[0x1E9] = 2                          # eddbuf_entries
    zp[0x1EA] = 1
    zp[0x290:0x294] = b"MBR!"
    zp[0xD00:0xD04] = b"EDD!"
    struct.pack_into("<I", zp, 0x23C, subarch)
    if efi:
        bp.EFI_INFO.pack_into(zp, 0x1C0, *efi)
    zp[0x1EC] = 3 if efi else 0
    return bytes(zp)


def test_running_kernel_facts_are_carried_over(header, qemu_host):
    running = _running_boot_params(rsdp=0xF5A20, subarch=0)
    built = bp.build_boot_params(header, qemu_host.memory_map, ADDR, "", boot_params=running,
                                 acpi_rsdp=None)
    d = built.data
    assert d[0:0x40] == running[0:0x40][:2] + d[2:4] + running[4:0x40]  # ext_mem_k is ours
    assert d[0x1E9] == 2 and d[0x1EA] == 1
    assert d[0x290:0x294] == b"MBR!" and d[0xD00:0xD04] == b"EDD!"


def test_acpi_rsdp_from_host_and_from_boot_params(vmlinuz):
    mm = MemoryMap([Range(0, 0x9F000), Range(0x100000, 0x80000000)])
    host = Host(arch="x86_64", memory_map=mm, efi=False, boot_params=_running_boot_params(rsdp=0xF5A20))
    plan = Plan(mm)
    BzImage.load(vmlinuz, None, "", host, plan)
    assert bp.parse_zero_page(plan.segment("boot_params").buf)["acpi_rsdp_addr"] == 0xF5A20
    host2 = Host(arch="x86_64", memory_map=mm, efi=False, acpi_rsdp=0x7FF7E014)
    plan2 = Plan(mm)
    BzImage.load(vmlinuz, None, "", host2, plan2)
    assert bp.parse_zero_page(plan2.segment("boot_params").buf)["acpi_rsdp_addr"] == 0x7FF7E014


def test_real_running_boot_params_if_readable(header, qemu_host):
    path = "/sys/kernel/boot_params/data"
    try:
        with open(path, "rb") as f:
            running = f.read()
    except OSError:
        pytest.skip("%s not readable here" % path)
    built = bp.build_boot_params(header, qemu_host.memory_map, ADDR, "", boot_params=running)
    zp = bp.parse_zero_page(built.data)
    assert zp["acpi_rsdp_addr"] == 0  # only what we were given: no host value passed
    assert built.data[0x23C:0x240] == running[0x23C:0x240]


# -- EFI -------------------------------------------------------------------------------------

RUNTIME_MAP = [
    (11, 0xFEB00000, 0xFFFFFFFEFE900000, 0x100, 0x8000000000000001),
    (5, 0x7F9D0000, 0xFFFFFFFEFE800000, 0x30, 0x800000000000000F),
    (6, 0x7FA00000, 0xFFFFFFFEFE700000, 0x80, 0x800000000000000F),
]


def make_efi_sysroot(root, runtime_map=True):
    efi = os.path.join(root, "sys", "firmware", "efi")
    os.makedirs(efi)
    with open(os.path.join(efi, "systab"), "w") as f:
        f.write("ACPI20=0x7fb7e014\nACPI=0x7fb7e000\nSMBIOS=0x7f93d000\nSMBIOS3=0x7f93b000\n")
    for name, val in (("fw_vendor", 0x7F5E0218), ("runtime", 0x7F5E0B98), ("config_table", 0x7F5DF018)):
        with open(os.path.join(efi, name), "w") as f:
            f.write("0x%x\n" % val)
    if runtime_map:
        for i, (t, p, v, n, a) in enumerate(RUNTIME_MAP):
            d = os.path.join(efi, "runtime-map", str(i))
            os.makedirs(d)
            for name, val in (("type", t), ("phys_addr", p), ("virt_addr", v), ("num_pages", n), ("attribute", a)):
                with open(os.path.join(d, name), "w") as f:
                    f.write("0x%x\n" % val)
    kb = os.path.join(root, "sys", "kernel", "boot_params")
    os.makedirs(kb)
    running = _running_boot_params(rsdp=0x7FB7E014,
                                   efi=(b"EL64", 0x7F5E0018, 48, 1, 0x7E000000, 48 * 40, 0, 0))
    with open(os.path.join(kb, "data"), "wb") as f:
        f.write(running)
    return running


def test_efi_state_read(tmp_path):
    running = make_efi_sysroot(str(tmp_path))
    st = efimod.EfiState.read(str(tmp_path))
    assert st.usable, st.problem
    assert st.loader_signature == b"EL64" and st.systab == 0x7F5E0018 and st.memdesc_version == 1
    assert (st.fw_vendor, st.runtime, st.config_table, st.smbios) == (0x7F5E0218, 0x7F5E0B98, 0x7F5DF018, 0x7F93D000)
    assert [(d.type, d.phys_addr, d.virt_addr, d.num_pages, d.attribute) for d in st.runtime_map] == RUNTIME_MAP
    assert st.secure_boot == 3
    assert efimod.EfiState.read(str(tmp_path), boot_params=running) == st
    assert efimod.EfiState.read(str(tmp_path / "nothing")) is None


def test_efi_passed_on_with_runtime_map(tmp_path, header, qemu_host):
    running = make_efi_sysroot(str(tmp_path))
    st = efimod.EfiState.read(str(tmp_path))
    built = bp.build_boot_params(header, qemu_host.memory_map, ADDR, "q", boot_params=running, efi=st)
    zp = bp.parse_zero_page(built.data)
    assert built.efi
    ei = zp["efi_info"]
    assert ei["loader_signature"] == b"EL64" and ei["systab"] == 0x7F5E0018
    assert ei["memdesc_size"] == 40 and ei["memdesc_version"] == 1
    assert ei["memmap_size"] == 40 * len(RUNTIME_MAP)
    off = ei["memmap"] - ADDR
    descs = [bp.EFI_MEMDESC.unpack_from(built.data, off + 40 * i) for i in range(len(RUNTIME_MAP))]
    assert [(t, p, v, n, a) for t, _pad, p, v, n, a in descs] == RUNTIME_MAP
    chain = _sd_chain(built.data, ADDR, zp["setup_data"])
    assert [t for t, dummy in chain] == [bp.SETUP_EFI]
    fw_vendor, runtime, tables, smbios = struct.unpack_from("<QQQQ", chain[0][1])
    assert (fw_vendor, runtime, tables, smbios) == (0x7F5E0218, 0x7F5E0B98, 0x7F5DF018, 0x7F93D000)
    assert len(chain[0][1]) == 96
    assert zp["secure_boot"] == 3


def test_efi_and_e820_ext_chain_together(tmp_path, header):
    running = make_efi_sysroot(str(tmp_path))
    st = efimod.EfiState.read(str(tmp_path))
    ranges = [Range(i * 0x200000, i * 0x200000 + 0x100000) for i in range(130)]
    built = bp.build_boot_params(header, MemoryMap(ranges), ADDR, "", boot_params=running, efi=st)
    chain = _sd_chain(built.data, ADDR, bp.parse_zero_page(built.data)["setup_data"])
    assert sorted(t for t, dummy in chain) == [bp.SETUP_E820_EXT, bp.SETUP_EFI]


def test_efi_without_runtime_map_is_left_out_with_warning(tmp_path, vmlinuz, qemu_host):
    running = make_efi_sysroot(str(tmp_path), runtime_map=False)
    st = efimod.EfiState.read(str(tmp_path))
    assert not st.usable and "runtime-map" in st.problem
    host = Host(arch="x86_64", memory_map=qemu_host.memory_map, efi=True, boot_params=running,
                acpi_rsdp=0x7FB7E014)
    plan = Plan(host.memory_map)
    li = BzImage.load(vmlinuz, None, "root=/dev/sda1", host, plan, efi=st)
    seg = plan.segment("boot_params")
    zp = bp.parse_zero_page(seg.buf)
    assert zp["efi_info"]["loader_signature"] == b"\0\0\0\0" and zp["efi_info"]["memmap_size"] == 0
    # No SETUP_EFI record: only the RNG seed every load carries.
    assert [t for t, dummy in _sd_chain(seg.buf, seg.mem, zp["setup_data"])] == [bp.SETUP_RNG_SEED] and not li.efi
    assert zp["acpi_rsdp_addr"] == 0x7FB7E014
    assert any("runtime-map" in w for w in li.warnings)
    assert li.cmdline == b"root=/dev/sda1"  # no noefi added


def test_every_load_seeds_the_next_kernels_rng_with_fresh_bytes(vmlinuz, qemu_host):
    """SETUP_RNG_SEED (32 bytes, what the kernel's own kexec_file loader passes) in the chain,
    fresh for every load: never the same bytes twice, never read from the running boot."""
    seeds = []
    for dummy in range(2):
        plan = Plan(qemu_host.memory_map)
        BzImage.load(vmlinuz, None, "root=/dev/vda", qemu_host, plan)
        seg = plan.segment("boot_params")
        chain = _sd_chain(seg.buf, seg.mem, bp.parse_zero_page(seg.buf)["setup_data"])
        records = [payload for kind, payload in chain if kind == bp.SETUP_RNG_SEED]
        assert len(records) == 1 and len(records[0]) == 32
        seeds.append(records[0])
    assert seeds[0] != seeds[1] and bytes(32) not in seeds


def test_a_fixed_entropy_source_gives_the_same_bytes_and_none_gives_no_seed(vmlinuz, qemu_host):
    def fixed(n):
        return bytes(range(n))
    plan = Plan(qemu_host.memory_map)
    li = BzImage.load(vmlinuz, None, "root=/dev/vda", qemu_host, plan, entropy=fixed)
    seg = plan.segment("boot_params")
    chain = _sd_chain(seg.buf, seg.mem, bp.parse_zero_page(seg.buf)["setup_data"])
    assert chain == [(bp.SETUP_RNG_SEED, bytes(range(32)))]
    assert not any("RNG" in w for w in li.warnings)
    plan = Plan(qemu_host.memory_map)
    li = BzImage.load(vmlinuz, None, "root=/dev/vda", qemu_host, plan, entropy=lambda n: None)
    seg = plan.segment("boot_params")
    assert bp.parse_zero_page(seg.buf)["setup_data"] == 0
    assert any("RNG is not initialized" in w for w in li.warnings)


def test_efi_host_without_recorded_state_warns(header, qemu_host):
    host = Host(arch="x86_64", memory_map=qemu_host.memory_map, efi=True)
    ctx = bp.BootParamsContext.from_host(host, efi=efimod.state_for(host))
    assert ctx.efi is not None and not ctx.efi.usable
    assert any("EFI is not passed" in w for w in ctx.warnings)
    assert any("RSDP address is unknown" in w for w in ctx.warnings)


def test_efi_state_as_dict_on_host(tmp_path, header, qemu_host):
    running = make_efi_sysroot(str(tmp_path))
    st = efimod.EfiState.read(str(tmp_path))
    host = Host(arch="x86_64", memory_map=qemu_host.memory_map, efi=True, boot_params=running)
    host.efi_state = st.to_dict()  # what a JSON round trip of the host would carry
    ctx = bp.BootParamsContext.from_host(host, efi=efimod.state_for(host))
    assert ctx.efi == st and ctx.warnings == []


def test_empty_memory_map_refused(header):
    host = Host(arch="x86_64", memory_map=MemoryMap([]), efi=False)
    with pytest.raises(KexecError, match="memory map is empty"):
        bp.BootParamsContext.from_host(host)


def test_e820_cannot_describe_ram_at_the_top_of_the_address_space():
    # An e820 size is a u64: a range ending at 2**64 has no entry. RAM there is a corrupted map
    # (refused, saying so); a reservation recorded to the top loses its last byte.
    top = 1 << 64
    with pytest.raises(KexecError, match="beyond any x86_64 physical address"):
        bp.e820_entries([(0, top, bp.E820_RAM)])
    entries = bp.e820_entries([(0, 0xA0000, bp.E820_RAM), (0xFD000000, top, bp.E820_RESERVED)])
    assert entries == [(0, 0xA0000, bp.E820_RAM), (0xFD000000, top - 1 - 0xFD000000, bp.E820_RESERVED)]
    struct.pack("<QQI", *entries[-1])  # what the zero page packs: it fits
