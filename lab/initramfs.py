"""A small initramfs for the lab VMs, built on this machine without running foreign code.

Debian's own initramfs (update-initramfs, MODULES=most) takes about 12 minutes per run under TCG
and the kernel packages run it twice, so the foreign images boot this one instead, for every boot
and every kexec; x86_64 VMs boot it for their first boot only (lab/image.py: their kexecs load
Debian's, as a real host would). It holds the target architecture's static busybox (from Debian's
busybox-static package, unpacked, never executed here), the few kernel modules a lab VM needs
before its root file system is mounted, and an /init that loads them, mounts /dev/vda and switches
to it.

The modules come from the kernel package itself. Which ones are built in differs per kernel
(modules.builtin), and their dependencies come from each module's own `.modinfo` (`depends=`,
what depmod reads too), so /init loads them by path in dependency order: no modules.dep, no depmod
and no modprobe are needed. Compressed modules (6.12 ships .ko.xz) are stored decompressed, so
busybox's insmod needs no decompressor.
"""

import gzip
import io
import lzma
import os
import stat

try:
    from elftools.elf.elffile import ELFFile
except ImportError:  # pragma: no cover - the lab runs from the project's .venv
    ELFFile = None

from lab.image import LabError

# Bump when the layout or /init changes: it is part of every image's cache key.
VERSION = 2
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
# Applets /init uses; busybox --install adds the rest for a rescue shell.
APPLETS = ("sh", "mount", "insmod", "switch_root", "sleep", "cat", "mkdir")

INIT = r"""#!/bin/busybox sh
# fleetboot lab initramfs (built on the lab host by lab/initramfs.py for {release}):
# load the modules the VM needs, mount the root file system, hand over to its init.
/bin/busybox --install -s /bin
export PATH=/bin
echo "fleetboot lab initramfs: {release}"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
root=/dev/vda
init=/sbin/init
mode=ro
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root="${{arg#root=}}" ;;
        init=*) init="${{arg#init=}}" ;;
        rw) mode=rw ;;
        ro) mode=ro ;;
    esac
done
for module in {modules}; do
    insmod "/lib/modules/{release}/$module" || echo "initramfs: insmod $module failed"
done
tries=0
while [ ! -b "$root" ] && [ $tries -lt 300 ]; do
    sleep 0.1
    tries=$((tries + 1))
done
if ! mount -t ext4 -o "$mode" "$root" /root; then
    echo "initramfs: cannot mount $root on /root; here is a shell"
    exec sh
fi
mount --move /dev /root/dev
mount --move /sys /root/sys
mount --move /proc /root/proc
exec switch_root /root "$init"
"""


def _module_name(path):
    """The kernel's name of a module file: basename without suffix, '-' read as '_'."""
    base = os.path.basename(path)
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[:-len(suffix)]
            break
    return base.replace("-", "_")


def _decompress(path, data):
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        raise LabError("%s is zstd-compressed; the lab's initramfs builder reads .ko, .ko.xz and .ko.gz"
                       % path)
    return data


def modinfo(data):
    """{key: [values]} from a module's .modinfo section (NUL-separated key=value strings)."""
    if ELFFile is None:
        raise LabError("pyelftools is missing: run the lab from the project's venv (make venv)")
    section = ELFFile(io.BytesIO(data)).get_section_by_name(".modinfo")
    info = {}
    for item in (section.data().split(b"\0") if section is not None else []):
        if b"=" in item:
            key, value = item.decode("utf-8", "replace").split("=", 1)
            info.setdefault(key, []).append(value)
    return info


class KernelModules:
    """The modules of one extracted kernel package (``tree``/lib/modules/``release``)."""

    def __init__(self, tree, release):
        self.release = release
        self.directory = os.path.join(tree, "lib", "modules", release)
        if not os.path.isdir(self.directory):
            raise LabError("%s has no lib/modules/%s: not an extracted linux-image package" % (tree, release))
        self.builtin = set()
        builtin = os.path.join(self.directory, "modules.builtin")
        if os.path.exists(builtin):
            with open(builtin) as f:
                self.builtin = {_module_name(line.strip()) for line in f if line.strip()}
        self.files = {}
        for here, _dirs, names in os.walk(os.path.join(self.directory, "kernel")):
            for n in names:
                if n.endswith(MODULE_SUFFIXES):
                    path = os.path.join(here, n)
                    self.files.setdefault(_module_name(n), os.path.relpath(path, self.directory))
        self._data = {}

    def data(self, name):
        """The module's uncompressed bytes."""
        if name not in self._data:
            rel = self.files[name]
            with open(os.path.join(self.directory, rel), "rb") as f:
                self._data[name] = _decompress(rel, f.read())
        return self._data[name]

    def stored_path(self, name):
        """Where the module sits in the initramfs, relative to lib/modules/<release> (always .ko)."""
        rel = self.files[name]
        for suffix in MODULE_SUFFIXES:
            if rel.endswith(suffix):
                return rel[:-len(suffix)] + ".ko"
        return rel

    def load_order(self, wanted):
        """The modules to insmod for ``wanted``, each after what it depends on.

        Built-in names are skipped; a wanted name that is neither built in nor a module of this
        kernel is an error (the VM would not find its disk).
        """
        order, seen = [], set()

        def visit(name, chain):
            name = name.replace("-", "_")
            if name in seen or name in self.builtin:
                return
            if name not in self.files:
                raise LabError("kernel %s has no module %s (needed by %s) and does not build it in"
                               % (self.release, name, " <- ".join(chain) or "the lab's initramfs"))
            if name in chain:
                raise LabError("module dependency cycle in %s: %s" % (self.release, " -> ".join(chain + [name])))
            for dep in modinfo(self.data(name)).get("depends", []):
                for d in dep.split(","):
                    if d:
                        visit(d, chain + [name])
            seen.add(name)
            order.append(name)

        for name in wanted:
            visit(name, [])
        return order


class Newc:
    """A newc ("070701") cpio archive built in memory, as the kernel's initramfs unpacker reads it."""

    def __init__(self):
        self.out = io.BytesIO()
        self.names = []
        self._ino = 0

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(encoded), 0]
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        self.out.write(head + b"\0" * (-len(head) % 4))
        self.out.write(data + b"\0" * (-len(data) % 4))
        if name != "TRAILER!!!":
            self.names.append(name)

    def directory(self, name):
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name, data, mode=0o644):
        parent = os.path.dirname(name)
        if parent and parent not in self.names:
            self.directory_tree(parent)
        self._entry(name, stat.S_IFREG | mode, data)

    def directory_tree(self, name):
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in self.names:
                self.directory(sub)

    def symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name, major, minor, mode=0o600):
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def build(kernel_tree, release, busybox, out_path, wanted):
    """Write the initramfs for kernel ``release`` (extracted package at ``kernel_tree``) to
    ``out_path``, gzip-compressed; return what it holds (names, and the module load order)."""
    modules = KernelModules(kernel_tree, release)
    order = modules.load_order(wanted)
    archive = Newc()
    for d in ("dev", "proc", "sys", "root", "bin"):
        archive.directory(d)
    # The kernel opens /dev/console for init's stdio before /init runs; without it, no output.
    archive.char_device("dev/console", 5, 1)
    with open(busybox, "rb") as f:
        archive.file("bin/busybox", f.read(), 0o755)
    for applet in APPLETS:
        archive.symlink("bin/" + applet, "busybox")
    paths = [modules.stored_path(name) for name in order]
    for name, rel in zip(order, paths):
        archive.file("lib/modules/%s/%s" % (release, rel), modules.data(name))
    archive.file("init", init_script(release, paths).encode(), 0o755)
    data = gzip.compress(archive.finish(), 6, mtime=0)
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out_path)
    return {"release": release, "modules": order, "files": archive.names, "bytes": len(data)}


def init_script(release, module_paths):
    """/init's text: ``module_paths`` (relative to lib/modules/<release>) are loaded in order."""
    return INIT.format(release=release, modules=" ".join(module_paths))
