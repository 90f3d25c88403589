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
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from lab import debian  # noqa: E402  (the private apt configuration, shared with the lab)

DEFAULT_VERSION = "6.1.0-56-amd64"
# Both exist in bookworm-security; two builds let tests compare fields that must agree.
TEST_VERSIONS = ("6.1.0-54-amd64", "6.1.0-56-amd64")


class KernelUnavailable(Exception):
    """The package could not be fetched (no network, no apt, unknown version)."""


class RequiredKernelUnavailable(RuntimeError):
    """A kernel could not be fetched where every test must run (``FLEETBOOT_REQUIRE_KERNELS=1``,
    set by ``make test``). Deliberately not a KernelUnavailable: the tests that turn that into a
    skip must not catch this, so a broken download fails CI instead of quietly skipping the
    tests that need the kernel."""


def kernels_required():
    return os.environ.get("FLEETBOOT_REQUIRE_KERNELS", "") not in ("", "0")


#: Debian architecture of a kernel flavour (the version's suffix), for the foreign ones.
FOREIGN_FLAVOURS = (("-powerpc64le-64k", "ppc64el"), ("-powerpc64le", "ppc64el"), ("-arm64", "arm64"))


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
    """apt-get options for a private configuration serving Debian bookworm ``arch`` packages
    (lab/debian.py), its lists and archives under the kernel cache by default."""
    return debian.foreign_apt_options(arch, root or os.path.join(cache_root(), ".apt-" + arch))


def _download(version, workdir, unsigned=False):
    """apt-get download the package into workdir; return the .deb path."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise KernelUnavailable("apt-get/dpkg-deb not found: cannot fetch linux-image-%s" % version)
    names = ("linux-image-" + version, "linux-image-" + version + "-unsigned")
    if unsigned:
        names = names[1:]
    arch = debian_arch(version)
    try:
        return debian.download(arch, [names], workdir, os.path.join(cache_root(), ".apt-" + arch))[0]
    except debian.PackageUnavailable as e:
        raise KernelUnavailable(str(e)) from None


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
                try:
                    deb = _download(version, work, unsigned)
                except KernelUnavailable as err:
                    if kernels_required():
                        raise RequiredKernelUnavailable("FLEETBOOT_REQUIRE_KERNELS is set (make test): %s" % err) from None
                    raise
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
