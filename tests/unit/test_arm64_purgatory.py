"""The arm64 purgatory: the shipped object, its link against GNU ld, its place in a plan, and the
linked purgatory run on an emulated CPU.

QEMU's virt machine starts a CPU at EL1 with the MMU and caches off, which is the state
arm64_relocate_new_kernel and cpu_soft_restart leave the purgatory in.  QEMU's generic loader puts
each segment where the plan says and starts the CPU at the plan's entry; a tiny stand-in
"kernel" prints the registers it was entered with on the PL011, so the run shows the digests
verified with the MMU off, the boot protocol's registers, and, with one byte of a segment
flipped, the refusal on the console and no kernel.
"""

import hashlib
import os
import re
import shutil
import struct
import subprocess
import time

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import purgatory as purg
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64 import console as con
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64 import purgatory as apurg
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64 import purgatory_blob
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.arm64 import reloc as r
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import elf
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import Range
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import Plan
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import PurgatoryError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.purgatory import regions

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MISMATCH = "fleetboot purgatory: sha256 mismatch in segment %d, refusing to boot"
UART = 0x09000000
RAM = (0x40000000, 0x80000000)


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip("%s is not installed (make deps)" % tool)


@pytest.fixture(scope="module")
def obj():
    return apurg.load_object()


def test_shipped_object_is_intact_and_has_what_the_linker_needs(obj):
    blob = purgatory_blob.object_bytes()
    assert hashlib.sha256(blob).hexdigest() == purgatory_blob.OBJECT_SHA256
    assert obj.elf.e_machine == elf.EM_AARCH64
    # PC-relative only: the small code model's ADRP pairs and calls, nothing absolute.
    assert obj.relocation_types() <= {r.R_AARCH64_ADR_PREL_PG_HI21, r.R_AARCH64_ADD_ABS_LO12_NC,
                                      r.R_AARCH64_LDST64_ABS_LO12_NC, r.R_AARCH64_LDST32_ABS_LO12_NC,
                                      r.R_AARCH64_LDST8_ABS_LO12_NC, r.R_AARCH64_CALL26, r.R_AARCH64_JUMP26}
    for name in (apurg.KERNEL_ENTRY_SYMBOL, apurg.DTB_SYMBOL) + apurg.CONSOLE_SYMBOLS:
        assert obj.symbol(name).size == 8 and obj.symbol_offset(name) % 8 == 0
    assert obj.symbol(regions.REGIONS_SYMBOL).size == 16 * 48
    assert obj.size - obj.filesz >= 16384  # the stack is .bss, zero-filled by the kernel
    assert b"\r\nfleetboot purgatory: sha256 mismatch in segment \0" in blob


def test_build_check_says_module_is_fresh():
    need("aarch64-linux-gnu-gcc")
    pytest.importorskip("elftools")
    res = subprocess.run([os.path.join(REPO, ".venv", "bin", "python"), os.path.join(REPO, "purgatory", "build.py"),
                          "--check", "arm64"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "up to date" in res.stdout or "skipped" in res.stdout


def test_matches_gnu_ld(obj, tmp_path):
    """The same object linked by aarch64-linux-gnu-ld at the same section addresses: same bytes."""
    need("aarch64-linux-gnu-ld")
    need("aarch64-linux-gnu-objcopy")
    for base in (0x4_0000_0000 + 0x7000, 0x40001000):
        (tmp_path / "p.ro").write_bytes(purgatory_blob.object_bytes())
        lines = ["SECTIONS {"]
        for sec in obj.elf.sections:
            if sec.index in obj.offsets:
                lines.append("  %s 0x%x : { *(%s) }" % (sec.name, base + obj.offsets[sec.index], sec.name))
        lines += ["  /DISCARD/ : { *(.comment) *(.note.GNU-stack) }", "}"]
        (tmp_path / "link.ld").write_text("\n".join(lines) + "\n")
        subprocess.run(["aarch64-linux-gnu-ld", "-static", "-nostdlib", "-e", purg.ENTRY_SYMBOL, "-T", "link.ld",
                        "-o", "p.elf", "p.ro"], cwd=str(tmp_path), check=True)
        subprocess.run(["aarch64-linux-gnu-objcopy", "-O", "binary", "-R", ".bss", "p.elf", "p.bin"],
                       cwd=str(tmp_path), check=True)
        assert bytes(obj.link(base)) == (tmp_path / "p.bin").read_bytes()
        by_name = {s.name: s.value for s in elf.ElfFile((tmp_path / "p.elf").read_bytes()).symbols()}
        for name in (purg.ENTRY_SYMBOL, regions.REGIONS_SYMBOL, apurg.DTB_SYMBOL, "stack_top"):
            assert by_name[name] == base + obj.symbol_offset(name)


def _value(linked, name):
    return struct.unpack_from("<Q", linked.segment.buf, linked.object.symbol_offset(name))[0]


def test_link_writes_entry_dtb_console_and_one_digest_per_segment(obj):
    plan = Plan([Range(*RAM)], page_size=65536)
    kernel = plan.add_segment("kernel", os.urandom(100000), memsz=0x200000, align=0x200000)
    dtb = plan.add_segment("dtb", os.urandom(3000), min_addr=kernel.end)
    console = con.Console(con.NS16550, 0x1c020000, 2, 4)
    linked = apurg.link(plan, kernel.mem, dtb.mem, console=console, obj=obj)
    assert plan.entry == linked.entry == linked.segment.mem + obj.symbol_offset(purg.ENTRY_SYMBOL)
    assert linked.segment.mem % 65536 == 0 and linked.segment.end == RAM[1]  # top-down, host pages
    assert _value(linked, apurg.KERNEL_ENTRY_SYMBOL) == kernel.mem and _value(linked, apurg.DTB_SYMBOL) == dtb.mem
    assert [_value(linked, n) for n in apurg.CONSOLE_SYMBOLS] == [con.NS16550, 0x1c020000, 2, 4]
    assert linked.regions == [(s.mem, s.bufsz, hashlib.sha256(bytes(s.buf)).digest()) for s in (kernel, dtb)]
    plan.check()
    silent = apurg.link(Plan([Range(*RAM)]), 0x40200000, 0x40000000, obj=obj)
    assert [_value(silent, n) for n in apurg.CONSOLE_SYMBOLS] == [0, 0, 0, 1]


def test_link_refuses_addresses_that_are_not_addresses(obj):
    with pytest.raises(PurgatoryError, match="device tree address"):
        apurg.link(Plan([Range(*RAM)]), 0x40200000, -1, obj=obj)


# ---------------------------------------------------------------------------------------------
# the linked purgatory on an emulated arm64 CPU

FAKE_KERNEL = r"""
    .text
    .globl    _start
_start:
    mov    x19, x0
    mov    x20, x1
    mov    x21, x2
    mov    x22, x3
    mrs    x23, sctlr_el1
    mrs    x24, daif
    mrs    x25, CurrentEL
    adr    x0, banner
    bl    puts
    mov    x0, x19
    bl    puthex
    mov    x0, x20
    bl    puthex
    mov    x0, x21
    bl    puthex
    mov    x0, x22
    bl    puthex
    mov    x0, x23
    bl    puthex
    mov    x0, x24
    bl    puthex
    mov    x0, x25
    bl    puthex
    adr    x0, done
    bl    puts
1:    wfi
    b    1b
puts:
    ldr    x1, =0x09000000
2:    ldrb    w2, [x0], #1
    cbz    w2, 3f
    str    w2, [x1]
    b    2b
3:    ret
puthex:
    ldr    x1, =0x09000000
    mov    x3, #60
4:    lsr    x2, x0, x3
    and    x2, x2, #0xf
    add    x4, x2, #48
    add    x5, x2, #87
    cmp    x2, #10
    csel    x2, x4, x5, lo
    str    w2, [x1]
    subs    x3, x3, #4
    b.ge    4b
    mov    w2, #32
    str    w2, [x1]
    ret
    .balign    8
banner:    .asciz    "FAKE-KERNEL "
done:    .asciz    "END\n"
    .balign    8
    .ltorg
"""


def fake_kernel(tmp_path, address):
    need("aarch64-linux-gnu-as")
    (tmp_path / "k.s").write_text(FAKE_KERNEL)
    subprocess.run(["aarch64-linux-gnu-as", "-o", str(tmp_path / "k.o"), str(tmp_path / "k.s")], check=True)
    subprocess.run(["aarch64-linux-gnu-ld", "-static", "-nostdlib", "-Ttext=%#x" % address, "-o", str(tmp_path / "k.elf"),
                    str(tmp_path / "k.o")], check=True)
    subprocess.run(["aarch64-linux-gnu-objcopy", "-O", "binary", str(tmp_path / "k.elf"), str(tmp_path / "k.bin")],
                   check=True)
    return (tmp_path / "k.bin").read_bytes()


def run_qemu(tmp_path, plan, until, timeout=60):
    """Boot the plan's segments on qemu virt (EL1, MMU off) at plan.entry; the console until
    ``until`` appears or ``timeout`` passes."""
    need("qemu-system-aarch64")
    args = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-m", "1024", "-nographic", "-no-reboot",
            "-monitor", "none", "-serial", "file:%s" % (tmp_path / "console.log")]
    for i, seg in enumerate(plan.segments):
        path = tmp_path / ("seg%d.bin" % i)
        path.write_bytes(bytes(memoryview(seg.buf)[:seg.bufsz]))
        args += ["-device", "loader,file=%s,addr=%#x,force-raw=on" % (path, seg.mem)]
    args += ["-device", "loader,addr=%#x,cpu-num=0" % plan.entry]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "console.log"
    deadline = time.time() + timeout
    text = ""
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            text = log.read_bytes().decode("utf-8", "replace") if log.exists() else ""
            if until in text:
                time.sleep(1)  # anything printed after the marker shows too
                break
        return (log.read_bytes().decode("utf-8", "replace") if log.exists() else ""), proc.poll()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def emulated_plan(tmp_path, console=con.Console(con.PL011, UART, 2, 4, "test")):
    plan = Plan([Range(*RAM)])
    kaddr = 0x40200000
    kernel = plan.add_segment("kernel", fake_kernel(tmp_path, kaddr), memsz=0x200000, align=0x200000, min_addr=kaddr)
    assert kernel.mem == kaddr
    payload = plan.add_segment("initrd", os.urandom(3 << 20), min_addr=kernel.end)
    dtb = plan.add_segment("dtb", os.urandom(5000), min_addr=payload.end)
    apurg.link(plan, kernel.mem, dtb.mem, console=console)
    plan.check()
    return plan, dtb


def test_verified_segments_enter_the_kernel_with_the_boot_protocols_registers(tmp_path):
    plan, dtb = emulated_plan(tmp_path)
    console, _status = run_qemu(tmp_path, plan, "END")
    match = re.search(r"FAKE-KERNEL ((?:[0-9a-f]{16} ){7})END", console)
    assert match, console
    x0, x1, x2, x3, sctlr, daif, current_el = [int(v, 16) for v in match.group(1).split()]
    assert x0 == dtb.mem and (x1, x2, x3) == (0, 0, 0)
    assert not sctlr & 1 and not sctlr & 4  # SCTLR_EL1.M and .C: MMU and data cache off
    assert daif == 0x3C0  # D, A, I, F masked
    assert current_el >> 2 == 1
    assert "mismatch" not in console


def test_a_flipped_byte_halts_in_purgatory_naming_the_segment(tmp_path):
    plan, _dtb = emulated_plan(tmp_path)
    initrd = plan.segments[1]
    damaged = bytearray(initrd.buf)
    damaged[len(damaged) // 2] ^= 0x01
    initrd.buf = damaged  # after linking: the digest in purgatory is the intact one's
    console, status = run_qemu(tmp_path, plan, MISMATCH % 1, timeout=60)
    assert "\r\n" + MISMATCH % 1 + "\r\n" in console, console
    assert "FAKE-KERNEL" not in console
    assert status is None  # halted, not reset or powered off: QEMU was still running


def test_without_a_console_it_halts_silently(tmp_path):
    plan, _dtb = emulated_plan(tmp_path, console=con.SILENT)
    plan.segments[0].buf = bytearray(plan.segments[0].buf)
    plan.segments[0].buf[100] ^= 0xFF
    console, status = run_qemu(tmp_path, plan, "never printed", timeout=8)
    assert console == "" and status is None
