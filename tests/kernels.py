"""Real Debian kernels for tests and benchmarks.

Synthetic images only prove that we agree with ourselves; the loader has to read what distributions
actually ship.  ``kernel_package()`` fetches ``linux-image-<version>`` with ``apt-get download``
(the signed package first, then ``-unsigned``), unpacks it with ``dpkg-deb -x`` into a cache and
returns the paths.  Foreign builds (``-arm64``, ``-powerpc64le`` and their 6.12 flavours) come through a private apt
configuration under the cache (its own sources list, lists and archive directories, the foreign
architecture given as an option), so the machine's own apt setup is never touched and nothing is
installed.  The cache lives in ``$FLEETBOOT_CACHE/<version>/`` or
``~/.cache/fleetboot/kernels/<version>/``; a ``.complete`` marker written last makes a half-finished
extraction invisible, and an exclusive ``flock`` makes it safe under pytest-xdist (one worker
downloads, the others wait and then reuse).
"""

import fcntl
import glob
import os
import shutil
import subprocess
import tempfile

DEFAULT_VERSION = "6.1.0-56-amd64"
# Both exist in bookworm-security; two builds let tests compare fields that must agree.
TEST_VERSIONS = ("6.1.0-54-amd64", "6.1.0-56-amd64")


class KernelUnavailable(Exception):
    """The package could not be fetched (no network, no apt, unknown version)."""


#: Debian architecture of a kernel flavour (the version's suffix), for the foreign ones.
FOREIGN_FLAVOURS = (("-powerpc64le-64k", "ppc64el"), ("-powerpc64le", "ppc64el"), ("-arm64", "arm64"))
DEBIAN_ARCHIVE = os.environ.get("FLEETBOOT_LAB_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY = os.environ.get("FLEETBOOT_LAB_SECURITY_MIRROR", "http://deb.debian.org/debian-security")


def debian_arch(version):
    """The Debian architecture a kernel version is built for ('amd64' unless its flavour says)."""
    for suffix, arch in FOREIGN_FLAVOURS:
        if version.endswith(suffix):
            return arch
    return "amd64"


class KernelPackage:
    """Paths inside one extracted linux-image package.

    ``vmlinuz`` is the image the package installs in /boot: ``vmlinuz-<version>`` on amd64 and
    arm64, ``vmlinux-<version>`` (an ELF file) on ppc64el.
    """

    def __init__(self, version, root):
        self.version = version
        self.root = root
        self.arch = debian_arch(version)
        self.vmlinuz = os.path.join(root, "boot", "vmlinuz-" + version)
        if not os.path.exists(self.vmlinuz) and os.path.exists(os.path.join(root, "boot", "vmlinux-" + version)):
            self.vmlinuz = os.path.join(root, "boot", "vmlinux-" + version)
        config = os.path.join(root, "boot", "config-" + version)
        self.config = config if os.path.exists(config) else None
        sysmap = os.path.join(root, "boot", "System.map-" + version)
        self.system_map = sysmap if os.path.exists(sysmap) else None

    def config_value(self, name):
        """Value of CONFIG_<name> in the package's config ('y', '0x200000', ...) or None."""
        if not self.config:
            return None
        key = "CONFIG_" + name + "="
        with open(self.config) as f:
            for line in f:
                if line.startswith(key):
                    return line[len(key):].strip().strip('"')
        return None

    def __repr__(self):
        return "KernelPackage(%r, %r)" % (self.version, self.root)


def cache_root():
    """Directory that holds one subdirectory per kernel version."""
    env = os.environ.get("FLEETBOOT_CACHE")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "fleetboot", "kernels")


def _run(argv, cwd=None):
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=False)
    return proc.returncode, proc.stdout


def foreign_apt_options(arch, root=None):
    """apt-get options for a private configuration serving Debian bookworm ``arch`` packages.

    Everything apt writes (lists, archives) stays under ``root`` (in the kernel cache by
    default); the machine's sources, lists, architectures and locks are not used.
    """
    root = root or os.path.join(cache_root(), ".apt-" + arch)
    for sub in ("lists/partial", "archives/partial"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    sources = os.path.join(root, "sources.list")
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    signed = "[signed-by=%s] " % keyring if os.path.exists(keyring) else ""
    text = ("deb {s}{m} bookworm main\ndeb {s}{m} bookworm-updates main\ndeb {s}{sm} bookworm-security main\n"
            .format(s=signed, m=DEBIAN_ARCHIVE, sm=DEBIAN_SECURITY))
    current = None
    if os.path.exists(sources):
        with open(sources) as f:
            current = f.read()
    if current != text:
        with open(sources, "w") as f:
            f.write(text)
    return ["-o", "APT::Architecture=" + arch, "-o", "APT::Architectures=" + arch,
            "-o", "Dir::Etc::SourceList=" + sources, "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", "Dir::State::Lists=" + os.path.join(root, "lists"),
            "-o", "Dir::Cache=" + root, "-o", "Dir::Cache::Archives=" + os.path.join(root, "archives"),
            "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]


def _download(version, workdir, unsigned=False):
    """apt-get download the package into workdir; return the .deb path."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise KernelUnavailable("apt-get/dpkg-deb not found: cannot fetch linux-image-%s" % version)
    names = ["linux-image-" + version, "linux-image-" + version + "-unsigned"]
    if unsigned:
        names = names[1:]
    arch = debian_arch(version)
    options = [] if arch == "amd64" else foreign_apt_options(arch)
    log = []
    # Try without touching the apt lists first; only if no name resolves do we refresh them.
    for refresh in (False, True):
        if refresh:
            rc, out = _run(["apt-get"] + options + ["update", "-q"])
            log.append("apt-get update -> %d\n%s" % (rc, out[-2000:]))
        for name in names:
            rc, out = _run(["apt-get"] + options + ["download", "-q", name], cwd=workdir)
            log.append("apt-get download %s -> %d\n%s" % (name, rc, out[-2000:]))
            if rc == 0:
                debs = glob.glob(os.path.join(workdir, "*.deb"))
                if debs:
                    return debs[0]
    raise KernelUnavailable("could not download linux-image-%s (no network or unknown version):\n%s"
                            % (version, "\n".join(log)))


def kernel_package(version=DEFAULT_VERSION, unsigned=False):
    """Return a KernelPackage for ``version``, downloading and extracting it on first use.

    ``unsigned`` takes Debian's ``-unsigned`` build (no Secure Boot signature on the image),
    which lockdown tests need.
    """
    root = cache_root()
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, version + ("-unsigned" if unsigned else ""))
    marker = os.path.join(final, ".complete")
    if os.path.exists(marker):
        return KernelPackage(version, final)
    with open(final + ".lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        try:
            if os.path.exists(marker):  # another process finished while we waited
                return KernelPackage(version, final)
            work = tempfile.mkdtemp(prefix="." + version + ".", dir=root)
            try:
                deb = _download(version, work, unsigned)
                tree = os.path.join(work, "tree")
                rc, out = _run(["dpkg-deb", "-x", deb, tree])
                if rc != 0:
                    raise KernelUnavailable("dpkg-deb -x %s failed:\n%s" % (deb, out))
                if not any(os.path.exists(os.path.join(tree, "boot", n + version)) for n in ("vmlinuz-", "vmlinux-")):
                    raise KernelUnavailable("%s has no boot/vmlinuz-%s or boot/vmlinux-%s" % (deb, version, version))
                if os.path.exists(final):
                    shutil.rmtree(final)
                os.rename(tree, final)
                with open(marker, "w") as f:
                    f.write(os.path.basename(deb) + "\n")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        finally:
            fcntl.flock(lockf, fcntl.LOCK_UN)
    return KernelPackage(version, final)


if __name__ == "__main__":
    import sys
    for v in sys.argv[1:] or TEST_VERSIONS:
        print(kernel_package(v))
