"""Build and cache the arm64 and ppc64le lab images without running foreign code on this machine.

This machine has no binfmt handlers for foreign binaries and must not get any, so the x86 recipe
(debootstrap, then apt-get in a chroot) cannot work here. Instead:

1. on the host, `debootstrap --foreign` downloads and unpacks the packages (no maintainer script
   runs); the kernel packages and the target's static busybox are downloaded through a private apt
   configuration (lab/debian.py) and unpacked with `dpkg-deb -x`;
2. on the host, one small initramfs per kernel (lab/initramfs.py) and the lab's configuration files;
   `mkfs.ext4 -d` makes the raw disk;
3. inside a VM of the image's own architecture (QEMU TCG, one vCPU, no network), a script run as
   init does `debootstrap --second-stage`, installs the kernels with `dpkg -i` and puts the lab's
   files in place, then powers the VM off. update-initramfs never runs (about 12 minutes per run
   under TCG, twice per kernel): the host-built initramfs serves every boot and kexec, and
   `update_initramfs=no` keeps initramfs-tools from replacing it later.

Images are cached like the x86 one: `<cache>/<key>` where the key covers the architecture, the
package list, the kernels, the initramfs recipe and these build steps; built in `<key>.building`,
renamed into place when complete, under a file lock; older images of the same architecture only
are pruned.
"""

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from lab import arches, debian, initramfs
from lab import image as lab_image
from lab.image import LabError

# Bump when build() or STAGE2 changes what ends up in the image: it is part of the cache key.
BUILD_STEPS_VERSION = 1
STAGE2_DIR = "lab-stage2"
# Generous: the second stage takes about 10-15 minutes on a quiet machine, several times that when
# the two cores are shared with other VMs.
STAGE2_TIMEOUT = int(os.environ.get("FLEETBOOT_LAB_STAGE2_TIMEOUT", "5400"))
STAGE2_MEMORY = 1024
STAGE2_DONE = "fleetboot-lab: stage 2 done"
STAGE2_FAILED = "fleetboot-lab: stage 2 FAILED"
# Packages the kernel packages need beyond the lab's list (dpkg -i does not resolve dependencies).
EXTRA_PACKAGES = ("linux-base",)

STAGE2 = r"""#!/bin/sh
# fleetboot lab, second stage: runs as init inside a VM of the image's own architecture, once,
# when the image is built (lab/foreign.py). Ends by powering the VM off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
S=/{stage}
say() {{ echo "fleetboot-lab: $*"; }}
finish() {{
    # debootstrap unmounts /proc when it exits; sysrq needs it back.
    [ -e /proc/sysrq-trigger ] || mount -t proc proc /proc
    sync
    mount -o remount,ro / || say "could not remount / read-only"
    echo o > /proc/sysrq-trigger
    sleep 600
}}
fail() {{
    echo "{failed}: $*"
    [ -f /debootstrap/debootstrap.log ] && tail -n 40 /debootstrap/debootstrap.log
    finish
}}
[ -e /proc/self ] || mount -t proc proc /proc
say "second stage on $(uname -m) $(uname -r)"
# No fsync per unpacked file: the disk is thrown away if this stage fails.
echo force-unsafe-io > /etc/dpkg/dpkg.cfg.d/lab-unsafe-io
# No daemon starts from maintainer scripts (invoke-rc.d asks policy-rc.d; 101: action forbidden):
# they would cost time here and keep / from being remounted read-only at the end.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
start=$(date +%s)
/debootstrap/debootstrap --second-stage || fail "debootstrap --second-stage"
say "debootstrap --second-stage took $(( $(date +%s) - start )) s"
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
# The host-built initramfs serves every boot: initramfs-tools must never replace it.
sed -i 's/^update_initramfs=.*/update_initramfs=no/' /etc/initramfs-tools/update-initramfs.conf
grep -qx update_initramfs=no /etc/initramfs-tools/update-initramfs.conf || fail "update_initramfs=no"
# The kernels' hooks would create one anyway (about 12 minutes under TCG, twice per kernel).
dpkg-divert --local --rename --add /usr/sbin/update-initramfs || fail "dpkg-divert"
ln -s /bin/true /usr/sbin/update-initramfs
dpkg -i $S/debs/*.deb || fail "dpkg -i the kernels"
rm -f /usr/sbin/update-initramfs
dpkg-divert --local --rename --remove /usr/sbin/update-initramfs || fail "dpkg-divert --remove"
systemctl enable systemd-networkd || fail "systemctl enable systemd-networkd"
# The lab's files over the tree: network, sshd, root's key, fstab, sources and the units and
# generators lab/recipe/masked-*.txt mask (links to /dev/null, as `systemctl mask` makes).
cp -a $S/overlay/. / || fail "copy the lab's files"
# Only now: with an initrd in /boot, initramfs-tools' own configure step would try to rebuild it.
for k in {kernels}; do
    cp $S/initrd/initrd.img-$k /boot/initrd.img-$k || fail "copy /boot/initrd.img-$k"
done
apt-get clean
rm -f /etc/dpkg/dpkg.cfg.d/lab-unsafe-io /usr/sbin/policy-rc.d
# Each VM makes its own machine-id on its first boot (on its own overlay).
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
# All but this script, which is still open; the host removes it from the disk afterwards (a deleted
# open file would keep / from being remounted read-only before the power off).
rm -rf $S/debs $S/initrd $S/overlay
say "stage 2 took $(( $(date +%s) - start )) s"
echo "{done}"
finish
"""


def packages():
    """Debian packages of a foreign image: the lab's list without its amd64 kernels, plus what
    `dpkg -i` of the kernel packages needs."""
    base = [p for p in lab_image.packages() if not p.startswith("linux-image-")]
    return base + [p for p in EXTRA_PACKAGES if p not in base]


def stage2_script(arch):
    return STAGE2.format(stage=STAGE2_DIR, failed=STAGE2_FAILED, done=STAGE2_DONE,
                         kernels=" ".join(arch.kernels))


def recipe_key(arch):
    """A short hash of everything that decides the image's content, architecture first."""
    h = hashlib.sha256()
    for path in lab_image._recipe_files():  # pylint: disable=protected-access  # the same recipe files
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    parts = [arch.name, arch.debian, lab_image.SUITE, debian.MIRROR, debian.SECURITY_MIRROR, lab_image.DISK_SIZE,
             "steps=%d" % BUILD_STEPS_VERSION, " ".join(packages()), " ".join(arch.kernels), arch.boot_kernel,
             "initramfs=%d" % initramfs.VERSION, " ".join(arch.modules), initramfs.INIT, stage2_script(arch),
             arch.console]
    h.update("|".join(parts).encode())
    return arch.name + "-" + h.hexdigest()[:16]


def _apt_root(arch):
    # Shared with tests/kernels.py: one set of apt lists per architecture on this machine.
    base = os.environ.get("FLEETBOOT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fleetboot", "kernels")
    return os.path.join(base, ".apt-" + arch.debian)


def _say(out, text):
    out.write("lab[%s]: %s\n" % (time.strftime("%H:%M:%S"), text))
    out.flush()


def build(arch, log_to=sys.stderr, force=False):
    """Return the cached Image for ``arch`` (arm64, ppc64le), building it first if needed."""
    root = lab_image.cache_root()
    os.makedirs(root, exist_ok=True)
    key = recipe_key(arch)
    final = os.path.join(root, key)
    image = lab_image.Image(final)
    if image.is_complete() and not force:
        return image
    with open(os.path.join(root, key + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.is_complete() and not force:
            return image
        if os.geteuid() != 0:
            raise LabError("building the %s lab image needs root (debootstrap); run as root once, "
                           "later runs reuse %s" % (arch.name, final))
        missing = [c for c in ("debootstrap", "mkfs.ext4", "dpkg-deb", "ssh-keygen", arch.qemu) if shutil.which(c) is None]
        if missing:
            raise LabError("building the %s lab image needs %s: run `make deps`" % (arch.name, ", ".join(missing)))
        work = final + ".building"
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        log_path = os.path.join(work, "build.log")
        _say(log_to, "building the %s image %s (log: %s)" % (arch.name, key, log_path))
        with open(log_path, "w") as log:
            manifest = _build_in(arch, work, log, log_to)
        manifest["key"] = key
        with open(os.path.join(work, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(work, final)
        _say(log_to, "%s image %s built in %.0f s (second stage in the VM: %.0f s)"
             % (arch.name, key, manifest["build_seconds"], manifest["stage2_seconds"]))
        lab_image._prune(root, keep=key, arch=arch.name)  # pylint: disable=protected-access
        return lab_image.Image(final)


def _build_in(arch, work, log, out):
    """Every step of a build inside ``work``; returns the manifest."""
    started = time.time()
    run = lab_image._run  # pylint: disable=protected-access  # the x86 build's step runner and log
    tree = os.path.join(work, "tree")
    stage = os.path.join(tree, STAGE2_DIR)
    boot = os.path.join(work, "boot")
    os.makedirs(boot)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleetboot-lab",
         "-f", os.path.join(work, "id_ed25519")], log)
    _say(out, "%s: debootstrap --foreign (first stage, on this machine)" % arch.name)
    run(["debootstrap", "--foreign", "--arch=" + arch.debian, "--variant=minbase",
         "--include=" + ",".join(packages()), lab_image.SUITE, tree, debian.MIRROR], log)
    # The first stage leaves /proc as a symlink to the host's /proc; in the VM that would point the
    # initramfs's `mount --move /proc` at itself (ELOOP). The second stage wants a directory anyway.
    proc = os.path.join(tree, "proc")
    if os.path.islink(proc):
        os.unlink(proc)
        os.mkdir(proc, 0o555)
    _say(out, "%s: kernels and busybox-static through the private apt configuration" % arch.name)
    debs = os.path.join(stage, "debs")
    try:
        kernel_debs = debian.download(arch.debian, ["linux-image-" + k for k in arch.kernels], debs, _apt_root(arch))
        busybox_deb = debian.download(arch.debian, ["busybox-static"], os.path.join(work, "busybox"), _apt_root(arch))[0]
    except debian.PackageUnavailable as e:
        raise LabError(str(e)) from None
    busybox = os.path.join(debian.extract(busybox_deb, os.path.join(work, "busybox", "tree")), "bin", "busybox")
    contents = {}
    for release, deb in zip(arch.kernels, kernel_debs):
        extracted = debian.extract(deb, os.path.join(work, "kernels", release))
        image_name = arch.kernel_file + release
        shutil.copy2(os.path.join(extracted, "boot", image_name), os.path.join(boot, image_name))
        initrd = os.path.join(boot, "initrd.img-" + release)
        contents[release] = initramfs.build(extracted, release, busybox, initrd, arch.modules)
        log.write("initramfs for %s: %s\n" % (release, json.dumps(contents[release]["modules"])))
        os.makedirs(os.path.join(stage, "initrd"), exist_ok=True)
        shutil.copy2(initrd, os.path.join(stage, "initrd", "initrd.img-" + release))
    shutil.rmtree(os.path.join(work, "kernels"))
    shutil.rmtree(os.path.join(work, "busybox"))
    overlay = os.path.join(stage, "overlay")
    with open(os.path.join(work, "id_ed25519.pub")) as f:
        lab_image._configure_tree(overlay, f.read())  # pylint: disable=protected-access
    lab_image._write(os.path.join(overlay, "etc/apt/sources.list"),  # pylint: disable=protected-access
                     lab_image.SOURCES_LIST.format(m=debian.MIRROR, sm=debian.SECURITY_MIRROR, s=lab_image.SUITE))
    lab_image._write(os.path.join(stage, "stage2.sh"), stage2_script(arch), 0o755)  # pylint: disable=protected-access
    disk = os.path.join(work, "disk.raw")
    # Without a journal while the second stage writes (every fsync would be a journal commit under
    # TCG); the journal is added on this machine afterwards, so the image is a normal ext4.
    run(["mkfs.ext4", "-q", "-L", "labroot", "-O", "^has_journal", "-d", tree, "-F", disk, lab_image.DISK_SIZE], log)
    shutil.rmtree(tree)
    first_stage = time.time() - started
    _say(out, "%s: second stage inside a %s VM (TCG, 1 vCPU; about 10-15 minutes on a quiet machine)"
         % (arch.name, arch.qemu))
    stage2_seconds = _second_stage(arch, work, log, out)
    run(["debugfs", "-w", "-R", "rm /%s/stage2.sh" % STAGE2_DIR, disk], log)
    run(["debugfs", "-w", "-R", "rmdir /%s" % STAGE2_DIR, disk], log)
    # Exit status 1 is "errors corrected" (e2fsck(8)); 2 and up mean the disk is not to be trusted.
    log.write("\n$ e2fsck -f -p %s\n" % disk)
    log.flush()
    rc = subprocess.call(["e2fsck", "-f", "-p", disk], stdout=log, stderr=subprocess.STDOUT)
    if rc > 1:
        raise LabError("e2fsck found the %s disk damaged after the second stage (exit %d); see %s" % (arch.name, rc, log.name))
    run(["tune2fs", "-O", "has_journal", disk], log)
    return {"arch": arch.name, "debian_arch": arch.debian, "suite": lab_image.SUITE, "kernels": list(arch.kernels),
            "boot_kernel": arch.boot_kernel, "packages": packages(),
            "kernel_files": {k: "boot/" + arch.kernel_file + k for k in arch.kernels},
            "initramfs": contents,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "first_stage_seconds": round(first_stage, 1), "stage2_seconds": round(stage2_seconds, 1),
            "build_seconds": round(time.time() - started, 1)}


def _second_stage(arch, work, log, out):
    """Boot the new disk once with the second-stage script as init; wait until the VM powers off."""
    serial = os.path.join(work, "stage2-serial.log")
    release = arch.boot_kernel
    cmd = arches.qemu_command(
        arch, "lab-build-" + arch.name, STAGE2_MEMORY, 1,
        os.path.join(work, "boot", arch.kernel_file + release), os.path.join(work, "boot", "initrd.img-" + release),
        # panic=1: should the script die, the kernel resets and QEMU (-no-reboot) ends at once.
        arch.base_append() + " panic=1 init=/%s/stage2.sh" % STAGE2_DIR, os.path.join(work, "disk.raw"), serial,
        disk_format="raw")
    log.write("\n$ %s\n" % " ".join(cmd))
    log.flush()
    started = time.time()
    from lab.vm import _die_with_parent  # pylint: disable=import-outside-toplevel  # lab.vm imports lab.arches
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        next_report = started + 120
        while proc.poll() is None:
            if time.time() - started > STAGE2_TIMEOUT:
                raise LabError("the %s second stage did not finish within %d s (FLEETBOOT_LAB_STAGE2_TIMEOUT); "
                               "console: %s\n%s" % (arch.name, STAGE2_TIMEOUT, serial, _tail(serial)))
            if time.time() > next_report:
                _say(out, "%s: second stage running for %.0f s; console: %s"
                     % (arch.name, time.time() - started, _tail(serial, 1).strip()[:120]))
                next_report += 120
            time.sleep(2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with open(serial, "rb") as f:
        console = f.read().decode("utf-8", "replace")
    if STAGE2_DONE not in console:
        raise LabError("the %s second stage did not finish (QEMU exited %s); console: %s\n%s"
                       % (arch.name, proc.returncode, serial, _tail(serial)))
    return time.time() - started


def _tail(path, lines=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace").replace("\r", "")
    except OSError:
        return "(no console log)"
    return "\n".join(text.splitlines()[-lines:])


def image_for(arch, log_to=sys.stderr):
    """The cached image of any lab architecture (the x86 recipe for x86_64)."""
    if arch.name == "x86_64":
        return lab_image.build(log_to=log_to)
    return build(arch, log_to=log_to)
