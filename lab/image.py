"""Build and cache the lab's Debian bookworm disk image.

The image is a raw ext4 file made with `mkfs.ext4 -d` from a debootstrap tree (no loop mounts).
It lives under a cache directory keyed by a hash of its recipe (lab/recipe/*, this file, the
suite and mirror), so a second run, or CI on the same machine, reuses it. A build happens in a
temporary directory beside the final one and is renamed into place only when complete, under a
file lock, so an interrupted or concurrent build never leaves a half image behind.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

from lab import debian
from lab.debian import MIRROR, SECURITY_MIRROR, SUITE  # one definition for the x86 and foreign builds

RECIPE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipe")
DISK_SIZE = "3G"
# Bump when build() changes what ends up in the image: it is part of the cache key.
BUILD_STEPS_VERSION = 5
# The VMs boot the older kernel; tests kexec into the newer one.
BOOT_KERNEL = "6.1.0-54-amd64"
KERNELS = ("6.1.0-54-amd64", "6.1.0-56-amd64")
# The chroot steps need no more; debootstrap already resolved everything else.
SOURCES_LIST = (
    "deb {m} {s} main\n"
    "deb {m} {s}-updates main\n"
    "deb {sm} {s}-security main\n"
)


class LabError(Exception):
    """A lab step failed; the message says what and where to look."""


def cache_root():
    """Where built images live: $FLEETBOOT_LAB_CACHE, else ~/.cache/fleetboot/lab."""
    env = os.environ.get("FLEETBOOT_LAB_CACHE")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fleetboot", "lab")


def _recipe_files():
    names = sorted(os.listdir(RECIPE_DIR))
    return [os.path.join(RECIPE_DIR, n) for n in names if not n.startswith(".")]


def packages():
    """The package list from recipe/packages.txt, comments dropped."""
    return _recipe_lines("packages.txt")


def recipe_key():
    """A short hash of everything that decides the image's content."""
    h = hashlib.sha256()
    for path in _recipe_files():
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    from lab import arches, initramfs  # pylint: disable=import-outside-toplevel  # both import this module
    h.update("|".join([SUITE, MIRROR, SECURITY_MIRROR, DISK_SIZE, str(BUILD_STEPS_VERSION),
                       " ".join(KERNELS), "initramfs=%d" % initramfs.VERSION, initramfs.INIT,
                       " ".join(arches.X86_64.modules)]).encode())
    return h.hexdigest()[:16]


class Image:
    """A built lab image: raw disk, the kernels and initrds from its /boot, and the SSH key."""

    def __init__(self, directory):
        self.directory = directory

    @property
    def disk(self):
        return os.path.join(self.directory, "disk.raw")

    @property
    def key(self):
        return os.path.join(self.directory, "id_ed25519")

    def kernel(self, release=BOOT_KERNEL):
        path = os.path.join(self.directory, "boot", "vmlinuz-" + release)
        elf = os.path.join(self.directory, "boot", "vmlinux-" + release)
        # ppc64el kernels are installed as an ELF vmlinux, not a vmlinuz.
        return elf if not os.path.exists(path) and os.path.exists(elf) else path

    def initrd(self, release=BOOT_KERNEL, debian=False):
        """QEMU's -initrd: the lab's small initramfs, or with ``debian`` the Debian initrd the VM's own
        /boot holds (x86_64 images keep a copy; foreign images boot the lab's one everywhere)."""
        if debian:
            path = os.path.join(self.directory, "boot", "debian", "initrd.img-" + release)
            if os.path.exists(path):
                return path
        return os.path.join(self.directory, "boot", "initrd.img-" + release)

    def manifest(self):
        with open(os.path.join(self.directory, "manifest.json")) as f:
            return json.load(f)

    @property
    def arch(self):
        """The image's architecture (uname -m); images of the x86 recipe do not say."""
        return self.manifest().get("arch", "x86_64")

    def is_complete(self):
        return os.path.exists(os.path.join(self.directory, "manifest.json"))


def _run(cmd, log, **kwargs):
    """Run a build step, its output appended to the build log; fail naming the log."""
    log.write("\n$ %s\n" % " ".join(cmd))
    log.flush()
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, **kwargs)
    if rc != 0:
        raise LabError("image build step failed (exit %d): %s\nsee the build log: %s"
                       % (rc, " ".join(cmd), log.name))


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _recipe_lines(name):
    """The non-comment lines of a recipe file."""
    with open(os.path.join(RECIPE_DIR, name)) as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [line for line in lines if line]


def _configure_initramfs(tree):
    """Before the kernels are installed: their initramfs carries only the listed modules."""
    _write(os.path.join(tree, "etc/initramfs-tools/conf.d/lab.conf"), "MODULES=list\nCOMPRESS=zstd\n")
    _write(os.path.join(tree, "etc/initramfs-tools/modules"), "\n".join(_recipe_lines("initramfs-modules")) + "\n")


def _mask_units(tree):
    """Mask the units recipe/masked-units.txt lists, as `systemctl mask` would, and the generators
    recipe/masked-generators.txt lists, as systemd.generator(7) says: a /dev/null link in /etc."""
    for recipe, directory in (("masked-units.txt", "etc/systemd/system"),
                              ("masked-generators.txt", "etc/systemd/system-generators")):
        where = os.path.join(tree, directory)
        os.makedirs(where, exist_ok=True)
        for name in _recipe_lines(recipe):
            link = os.path.join(where, name)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink("/dev/null", link)


def _configure_tree(tree, pubkey):
    """Files the VMs need, written straight into the tree (no chroot needed)."""
    with open(os.path.join(RECIPE_DIR, "fstab")) as f:
        _write(os.path.join(tree, "etc/fstab"), f.read())
    _write(os.path.join(tree, "etc/hostname"), "lab\n")
    _write(os.path.join(tree, "etc/hosts"), "127.0.0.1 localhost\n127.0.1.1 lab\n")
    with open(os.path.join(RECIPE_DIR, "20-lab.network")) as f:
        _write(os.path.join(tree, "etc/systemd/network/20-lab.network"), f.read())
    with open(os.path.join(RECIPE_DIR, "sshd_lab.conf")) as f:
        _write(os.path.join(tree, "etc/ssh/sshd_config.d/lab.conf"), f.read())
    with open(os.path.join(RECIPE_DIR, "modprobe-lab.conf")) as f:
        _write(os.path.join(tree, "etc/modprobe.d/lab.conf"), f.read())
    _mask_units(tree)
    # Every python3 in the VM loads the zip-import bytecode cache: Ansible's modules are zips,
    # compiled from scratch on every run without it (see the file).
    site_dir = os.path.join(tree, "usr/lib/python3/dist-packages")
    with open(os.path.join(RECIPE_DIR, "lab_zip_bytecode.py")) as f:
        _write(os.path.join(site_dir, "lab_zip_bytecode.py"), f.read())
    _write(os.path.join(site_dir, "lab_zip_bytecode.pth"), "import lab_zip_bytecode\n")
    ssh_dir = os.path.join(tree, "root/.ssh")
    os.makedirs(ssh_dir, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    _write(os.path.join(ssh_dir, "authorized_keys"), pubkey, 0o600)
    # update-grub (grub2-common) writes /boot/grub/grub.cfg; the VMs boot by QEMU -kernel, without
    # grub installed, so nothing else creates the directory.
    os.makedirs(os.path.join(tree, "boot/grub"), exist_ok=True)
    # Each VM's systemd makes its own machine-id on first boot (on its own overlay).
    _write(os.path.join(tree, "etc/machine-id"), "")


def _boot_initramfs(tree, work, boot, log):
    """QEMU's -initrd for the VMs' first boots: the lab's small initramfs (lab/initramfs.py, as the
    foreign images boot), not Debian's. initramfs-tools runs udev in the initramfs, which took
    4.5 s of a 20 s boot under TCG; /init of busybox loads the lab's few modules and mounts
    /dev/vda in well under a second. Debian's initrds stay in the image's /boot: every kexec and
    kdump test loads those, as a real host would."""
    from lab import arches, initramfs  # pylint: disable=import-outside-toplevel  # both import this module
    debs = [n for n in os.listdir(os.path.join(tree, "tmp")) if n.startswith("busybox-static_") and n.endswith(".deb")]
    if len(debs) != 1:
        raise LabError("the image build found %d busybox-static packages in its /tmp (wanted one); see %s"
                       % (len(debs), log.name))
    deb = os.path.join(tree, "tmp", debs[0])
    busybox = os.path.join(debian.extract(deb, os.path.join(work, "busybox")), "bin", "busybox")
    os.unlink(deb)
    for release in KERNELS:
        made = initramfs.build(tree, release, busybox, os.path.join(boot, "initrd.img-" + release),
                               arches.X86_64.modules)
        log.write("lab initramfs for %s: %s (%d bytes)\n" % (release, json.dumps(made["modules"]), made["bytes"]))
    shutil.rmtree(os.path.join(work, "busybox"))


def build(log_to=sys.stderr, force=False):
    """Return the cached Image for the current recipe, building it first if needed."""
    root = cache_root()
    os.makedirs(root, exist_ok=True)
    key = recipe_key()
    final = os.path.join(root, key)
    image = Image(final)
    if image.is_complete() and not force:
        return image
    lock_path = os.path.join(root, key + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.is_complete() and not force:
            return image
        if os.geteuid() != 0:
            raise LabError("building the lab image needs root (debootstrap, chroot); "
                           "run as root once, later runs reuse %s" % final)
        started = time.time()
        work = final + ".building"
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        tree = os.path.join(work, "tree")
        log_path = os.path.join(work, "build.log")
        log_to.write("lab: building image %s (log: %s)\n" % (key, log_path))
        log_to.flush()
        with open(log_path, "w") as log:
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleetboot-lab",
                  "-f", os.path.join(work, "id_ed25519")], log)
            base = [p for p in packages() if not p.startswith("linux-image-")]
            kernels = [p for p in packages() if p.startswith("linux-image-")]
            _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(base),
                  SUITE, tree, MIRROR], log)
            _configure_initramfs(tree)
            _write(os.path.join(tree, "etc/apt/sources.list"),
                   SOURCES_LIST.format(m=MIRROR, sm=SECURITY_MIRROR, s=SUITE))
            # The versioned kernels live in bookworm-security/updates, which debootstrap
            # cannot mix in; install them inside the chroot, /proc mounted in a private
            # mount namespace so nothing stays mounted on the host if the build dies.
            script = (
                "set -e; mount -t proc proc {t}/proc; mount -t sysfs sys {t}/sys; "
                "mount --bind /dev {t}/dev; "
                "chroot {t} /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c '"
                "apt-get update -q && apt-get install -y -q --no-install-recommends {k} && "
                "systemctl enable systemd-networkd && cd /tmp && apt-get download -q busybox-static && "
                "apt-get clean'"
            ).format(t=tree, k=" ".join(kernels))
            _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], log)
            with open(os.path.join(work, "id_ed25519.pub")) as f:
                _configure_tree(tree, f.read())
            boot = os.path.join(work, "boot")
            os.makedirs(boot)
            # Debian's initrds go to boot/debian/ (QEMU's default -initrd is the lab's, below): reboot
            # timings compare a cold boot with a kexec, and both must boot Debian's.
            os.makedirs(os.path.join(boot, "debian"))
            for release in KERNELS:
                for name, dest in (("vmlinuz-" + release, boot), ("initrd.img-" + release, os.path.join(boot, "debian"))):
                    src = os.path.join(tree, "boot", name)
                    if not os.path.exists(src):
                        raise LabError("the image has no /boot/%s; see %s" % (name, log_path))
                    shutil.copy2(src, os.path.join(dest, name))
            _boot_initramfs(tree, work, boot, log)
            _run(["mkfs.ext4", "-q", "-L", "labroot", "-d", tree, "-F",
                  os.path.join(work, "disk.raw"), DISK_SIZE], log)
        shutil.rmtree(tree)
        manifest = {"key": key, "suite": SUITE, "kernels": list(KERNELS),
                    "boot_kernel": BOOT_KERNEL, "packages": packages(),
                    "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_seconds": round(time.time() - started, 1)}
        with open(os.path.join(work, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(work, final)
        log_to.write("lab: image %s built in %.0f s\n" % (key, time.time() - started))
        _prune(root, keep=key)
        return Image(final)


def _prune(root, keep, arch="x86_64"):
    """Drop images of older recipes of the same architecture (each is 1-3 GiB); another
    architecture's images, builds in progress and dot directories stay."""
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name == keep or name.startswith(".") or not os.path.isdir(path) or name.endswith(".building"):
            continue
        try:
            built_for = Image(path).arch
        except (OSError, ValueError):
            built_for = None  # no manifest: an interrupted build's leftover, whatever its arch
        if built_for in (arch, None):
            shutil.rmtree(path, ignore_errors=True)
