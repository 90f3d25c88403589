"""A pseries host tree for unit tests, built from QEMU's own device tree.

``qemu-system-ppc64 -M pseries,dumpdtb=FILE`` writes the tree SLOF starts from without booting
anything.  A booted Linux adds to it (RTAS instantiated at linux,rtas-base, linux,kernel-end, the
crash region in /chosen, a boot command line); ``make_sysroot`` adds those the way the kernel
does and writes the files Host.read looks at, so the ppc64le loader can be driven end to end on
any machine.  The recorded lab trees (tests/fixtures/sysroots/lab-ppc64le-*) are the real thing;
this one lets tests vary what they cannot (DRMEM, a console, memory sizes).
"""

import os
import shutil
import subprocess
import tempfile

GiB = 1 << 30
MiB = 1 << 20


def qemu_dtb(memory_mib=2048, cpus=2, extra=()):
    """The pseries device tree QEMU would hand SLOF, or None without qemu-system-ppc64."""
    qemu = shutil.which("qemu-system-ppc64")
    if qemu is None:
        return None
    tmp = tempfile.mkdtemp(prefix="dtb-")
    try:
        path = os.path.join(tmp, "p.dtb")
        subprocess.run([qemu, "-M", "pseries,dumpdtb=" + path, "-cpu", "POWER9", "-m", str(memory_mib),
                        "-smp", str(cpus), "-nographic", "-accel", "tcg"] + list(extra),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60)
        with open(path, "rb") as f:
            return f.read()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def qemu_dtb_or_skip():
    """qemu_dtb(), or skip the test where qemu-system-ppc64 is missing (make deps installs it)."""
    import pytest
    blob = qemu_dtb()
    if blob is None:
        pytest.skip("qemu-system-ppc64 is not installed (make deps)")
    return blob


def write_tree(tree, directory):
    """Unflatten ``tree`` (a core.fdt.DeviceTree) into a /proc/device-tree-like directory,
    adding the ``name`` property the kernel shows on every node."""
    todo = [(tree.root, directory)]
    while todo:
        node, path = todo.pop()
        os.makedirs(path, exist_ok=True)
        props = {p.name: p.value for p in node.properties}
        props.setdefault("name", node.basename.encode() + b"\0")
        for name, value in props.items():
            with open(os.path.join(path, name), "wb") as f:
                f.write(value)
        todo.extend((child, os.path.join(path, child.name)) for child in node.children)


def make_sysroot(root, dtb, release, config=None, page_size=65536, kernel_end=0x2880000, crash=None,
                 rtas=(0x1F000000 - 0x10000, 0x83C), cmdline="root=/dev/vda rw console=hvc0", cpus=2):
    """Write a pseries host tree under ``root``; ``crash`` is (base, size) or None."""
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core import fdt
    tree = fdt.parse_fdt(dtb)
    memory = [n for n in tree.root.children if n.basename == "memory"]
    ram_end = max(base + size for n in memory for base, size in n.reg(2, 2))
    chosen = fdt.chosen(tree)
    chosen.set_u64("linux,kernel-end", kernel_end)
    chosen.set_strings("bootargs", cmdline)
    chosen.remove("rng-seed")  # the kernel consumes it
    if crash:
        chosen.set_u64("linux,crashkernel-base", crash[0])
        chosen.set_u64("linux,crashkernel-size", crash[1])
    rtas_node = tree.node("/rtas")
    rtas_node.set_u32("linux,rtas-base", rtas[0])
    rtas_node.set_u32("linux,rtas-entry", rtas[0] + 0x100)
    rtas_node.set_u32("rtas-size", rtas[1])
    write_tree(tree, os.path.join(root, "proc", "device-tree"))

    def put(rel, text):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w" if isinstance(text, str) else "wb") as f:
            f.write(text)

    put("machine", "ppc64le\n")
    put("pagesize", "%d\n" % page_size)
    put("proc/sys/kernel/osrelease", release + "\n")
    put("proc/cmdline", cmdline + "\n")
    put("proc/meminfo", "MemTotal:       %d kB\n" % ((ram_end - (crash[1] if crash else 0) - 64 * MiB) // 1024))
    put("proc/iomem", "00000000-%08x : System RAM\n  00000000-%08x : Kernel code\n" % (ram_end - 1, 0x13fffff))
    put("sys/kernel/kexec_loaded", "0\n")
    put("sys/kernel/kexec_crash_loaded", "0\n")
    put("sys/kernel/kexec_crash_size", "%d\n" % (crash[1] if crash else 0))
    put("proc/sys/kernel/kexec_load_disabled", "0\n")
    put("sys/devices/system/cpu/possible", "0-%d\n" % (cpus - 1))
    for cpu in range(cpus):
        put("sys/devices/system/cpu/cpu%d/crash_notes" % cpu, "%x\n" % (0x7F000000 + cpu * 0x1000))
        put("sys/devices/system/cpu/cpu%d/crash_notes_size" % cpu, "512\n")
    put("sys/kernel/vmcoreinfo", "%x %x\n" % (0x2000000, 0x1000))
    if config:
        os.makedirs(os.path.join(root, "boot"), exist_ok=True)
        shutil.copy(config, os.path.join(root, "boot", "config-" + release))
    return root
