"""Synthetic arm64 host trees for unit tests, built around QEMU's own device tree.

``qemu-system-aarch64 -M virt,dumpdtb=FILE`` writes the tree the virt machine hands a kernel,
without booting anything; ``fdtput`` (dtc's package) then adds what a boot loader and a booted
kernel leave in /chosen (bootargs, the initrd range, a zeroed kaslr-seed) and a memory
reservation, so the loader meets the blob /sys/firmware/fdt shows on a lab VM.  The rest of the
tree (iomem with the running kernel's nested ranges, crash notes, vmcoreinfo, the head of
/proc/kcore) is written here from what arm64 kernels print, independent of the loader's readers.
"""

import os
import shutil
import struct
import subprocess

import pytest

GiB = 1 << 30
MiB = 1 << 20
RAM_START = 0x40000000
PAGE_OFFSET = 0xffff000000000000
KIMAGE_TEXT = 0xffff800008000000 + 0x1230000  # KIMAGE_VADDR plus a KASLR slide


def need(tool):
    if shutil.which(tool) is None:
        pytest.skip("%s is not installed (make deps)" % tool)


def qemu_dtb(directory, memory_mb=2048, cpus=2, machine="virt"):
    """QEMU virt's device tree, as bytes (cached in ``directory``)."""
    need("qemu-system-aarch64")
    path = os.path.join(str(directory), "qemu-%s-%d-%d.dtb" % (machine.replace(",", "_"), memory_mb, cpus))
    if not os.path.exists(path):
        subprocess.run(["qemu-system-aarch64", "-M", "%s,dumpdtb=%s" % (machine, path), "-cpu", "cortex-a72",
                        "-m", str(memory_mb), "-smp", str(cpus), "-nographic"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
    with open(path, "rb") as f:
        return f.read()


def booted_dtb(directory, blob, cmdline, initrd=None, reserve=None):
    """``blob`` as a booted kernel shows it in /sys/firmware/fdt: bootargs, initrd range, zeroed
    kaslr-seed, no rng-seed (the kernel erased it), and the given memory reservation."""
    need("fdtput")
    path = os.path.join(str(directory), "booted.dtb")
    with open(path, "wb") as f:
        f.write(blob)
    put = ["fdtput", path]
    subprocess.run(put + ["-t", "s", "/chosen", "bootargs", cmdline], check=True)
    subprocess.run(put + ["-t", "x", "/chosen", "kaslr-seed", "0", "0"], check=True)
    subprocess.run(["fdtput", "-d", path, "/chosen", "rng-seed"], stderr=subprocess.DEVNULL, check=False)
    if initrd is not None:
        start, end = initrd
        subprocess.run(put + ["-t", "x", "/chosen", "linux,initrd-start", "%x" % (start >> 32), "%x" % (start & 0xFFFFFFFF)],
                       check=True)
        subprocess.run(put + ["-t", "x", "/chosen", "linux,initrd-end", "%x" % (end >> 32), "%x" % (end & 0xFFFFFFFF)],
                       check=True)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if reserve:
        data = _add_reservation(data, reserve)
    return bytes(data)


def _add_reservation(blob, pair):
    """Insert one (address, size) in a blob's reservation block (no tool does that in place)."""
    off_struct, off_strings, off_rsv = struct.unpack_from(">III", blob, 8)
    entry = struct.pack(">QQ", *pair)
    out = bytearray(blob[:off_rsv]) + entry + blob[off_rsv:]
    struct.pack_into(">I", out, 4, struct.unpack_from(">I", blob, 4)[0] + 16)
    struct.pack_into(">II", out, 8, off_struct + 16, off_strings + 16)
    return bytes(out)


def iomem_text(ram_size, crash=None, extra_reserved=()):
    """An arm64 /proc/iomem: devices, System RAM with the running kernel's nested ranges."""
    end = RAM_START + ram_size
    lines = ["09000000-09000fff : pl011@9000000", "  09000000-09000fff : 9000000.pl011 pl011@9000000",
             "09010000-09010fff : pl031@9010000", "  09010000-09010fff : rtc-pl031",
             "%08x-%08x : System RAM" % (RAM_START, end - 1),
             "  40210000-41b5ffff : Kernel code", "  41b60000-41ffffff : reserved",
             "  42000000-4245ffff : Kernel data", "  48000000-480fffff : reserved"]
    if crash:
        lines.append("  %08x-%08x : Crash kernel" % (crash[0], crash[1] - 1))
    for start, stop in extra_reserved:
        lines.append("  %08x-%08x : reserved" % (start, stop - 1))
    lines.append("  %08x-%08x : reserved" % (end - 0x2400000, end - 1))
    lines.append("4010000000-401fffffff : PCI ECAM")
    return "\n".join(lines) + "\n"


def kcore_head(ram_size, kernel_phys=0x40210000, kernel_size=0x2050000):
    """The ELF header and program headers of an arm64 /proc/kcore: kernel text (KCORE_TEXT),
    vmalloc and modules (no physical address), the linear map of RAM (KCORE_RAM), vmemmap."""
    phdrs = [
        (4, 0, 0, 0, 0, 0x1000),                                            # PT_NOTE
        (1, KIMAGE_TEXT, kernel_phys, kernel_size, 0x1000, 0x10000),        # text
        (1, 0xffff800008000000, (1 << 64) - 1, 0x7bdffff0000, 0x2000, 0x10000),  # vmalloc
        (1, 0xffff800000000000, (1 << 64) - 1, 0x8000000, 0x3000, 0x10000),  # modules
        (1, PAGE_OFFSET, RAM_START, ram_size, 0x4000, 0x10000),             # linear map of RAM
        (1, 0xfffffc0000000000, (1 << 64) - 1, 0x2000000, 0x5000, 0x10000),  # vmemmap
    ]
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 4, 183, 1, 0, 64, 0, 0, 64, 56,
                       len(phdrs), 0, 0, 0)
    body = b"".join(struct.pack("<IIQQQQQQ", t, 7, off, v, p, s, s, 4096) for t, v, p, s, off, _a in phdrs)
    return ehdr + body


def write(root, rel, data):
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def make_sysroot(root, fdt, ram_size=2 * GiB, crash=None, cpus=2, release="6.1.0-54-arm64",
                 cmdline="BOOT_IMAGE=/vmlinuz root=/dev/vda rw console=ttyAMA0", config=None, efi=False,
                 extra_reserved=()):
    """Write an arm64 host tree under ``root``; returns its path."""
    write(root, "machine", "aarch64\n")
    write(root, "proc/sys/kernel/osrelease", release + "\n")
    write(root, "proc/sys/kernel/kexec_load_disabled", "0\n")
    write(root, "proc/cmdline", cmdline + "\n")
    write(root, "proc/meminfo", "MemTotal:       %d kB\nMemFree:        1000000 kB\n" % ((ram_size - 40 * MiB) // 1024))
    write(root, "proc/iomem", iomem_text(ram_size, crash, extra_reserved))
    write(root, "sys/firmware/fdt", fdt)
    write(root, "sys/kernel/kexec_loaded", "0\n")
    write(root, "sys/kernel/kexec_crash_loaded", "0\n")
    write(root, "sys/kernel/kexec_crash_size", "%d\n" % (crash[1] - crash[0] if crash else 0))
    if config is not None:
        write(root, "boot/config-" + release, config)
    if efi:
        write(root, "sys/firmware/efi/systab", "ACPI20=0xbff4e018\nSMBIOS3=0xbfc5c000\n")
    if crash:
        write(root, "sys/devices/system/cpu/possible", "0-%d\n" % (cpus - 1))
        for cpu in range(cpus):
            write(root, "sys/devices/system/cpu/cpu%d/crash_notes" % cpu, "%x\n" % (RAM_START + ram_size - 0x2300000 + cpu * 0x1000))
            write(root, "sys/devices/system/cpu/cpu%d/crash_notes_size" % cpu, "440\n")
        write(root, "sys/kernel/vmcoreinfo", "%x %x\n" % (RAM_START + 0x1f9e000, 0x1000))
        write(root, "proc/kcore", kcore_head(ram_size))
    return str(root)
