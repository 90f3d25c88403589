"""Debian packages of any architecture, fetched on this machine without touching its apt setup.

The lab's foreign images and the tests' kernels (tests/kernels.py) both need packages built for
another architecture (arm64, ppc64el). apt-get can download them through a private configuration:
its own sources list, lists and archive directories, the architecture given as an option, so the
machine's sources, architectures and locks are never used and nothing is installed. Packages are
only downloaded and unpacked with `dpkg-deb -x` here; nothing foreign is ever executed.
"""

import fcntl
import glob
import os
import subprocess

MIRROR = os.environ.get("FLEETBOOT_LAB_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("FLEETBOOT_LAB_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
SUITE = "bookworm"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class PackageUnavailable(Exception):
    """apt-get could not download a package (no network, no apt, unknown name)."""


def foreign_apt_options(arch, root):
    """apt-get options for a private configuration serving Debian bookworm ``arch`` packages.

    Everything apt writes (lists, archives) stays under ``root``; the machine's sources, lists,
    architectures and locks are not used.
    """
    for sub in ("lists/partial", "archives/partial"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    sources = os.path.join(root, "sources.list")
    signed = "[signed-by=%s] " % KEYRING if os.path.exists(KEYRING) else ""
    text = ("deb {s}{m} {d} main\ndeb {s}{m} {d}-updates main\ndeb {s}{sm} {d}-security main\n"
            .format(s=signed, m=MIRROR, sm=SECURITY_MIRROR, d=SUITE))
    current = None
    if os.path.exists(sources):
        with open(sources) as f:
            current = f.read()
    if current != text:
        with open(sources + ".tmp", "w") as f:
            f.write(text)
        os.replace(sources + ".tmp", sources)
    return ["-o", "APT::Architecture=" + arch, "-o", "APT::Architectures=" + arch,
            "-o", "Dir::Etc::SourceList=" + sources, "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", "Dir::State::Lists=" + os.path.join(root, "lists"),
            "-o", "Dir::Cache=" + root, "-o", "Dir::Cache::Archives=" + os.path.join(root, "archives"),
            "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root",
            # A dropped connection is retried; an index that does not match its signed Release
            # file is not (apt refuses it, and so do we: see _download_one).
            "-o", "Acquire::Retries=3"]


def _apt(options, args, cwd=None):
    proc = subprocess.run(["apt-get"] + options + args, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    return proc.returncode, proc.stdout


def download(arch, names, dest, root):
    """``apt-get download`` each package in ``names`` (any one of alternatives in a tuple) into
    ``dest``; return the .deb paths in the order asked.

    ``arch`` is a Debian architecture; 'amd64' uses the machine's own apt configuration, any other
    the private one under ``root``. The lists are refreshed only when a name does not resolve.
    apt runs under a lock on ``root`` (its lists are rewritten by an update; Debug::NoLocking
    turns apt's own lock off), so concurrent builds and test workers do not trip over each other.
    """
    if not os.path.exists("/usr/bin/apt-get"):
        raise PackageUnavailable("apt-get not found: cannot fetch %s" % ", ".join(map(str, names)))
    os.makedirs(root, exist_ok=True)
    os.makedirs(dest, exist_ok=True)
    options = [] if arch == "amd64" else foreign_apt_options(arch, root)
    paths = []
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for wanted in names:
            alternatives = wanted if isinstance(wanted, tuple) else (wanted,)
            paths.append(_download_one(options, alternatives, dest, arch))
    return paths


def _download_one(options, alternatives, dest, arch):
    log = []
    update_errors = []
    for refresh in (False, True):
        if refresh:
            rc, out = _apt(options, ["update", "-q"])
            log.append("apt-get update -> %d\n%s" % (rc, out[-2000:]))
            if rc != 0:
                update_errors = [line.strip() for line in out.splitlines() if line.startswith(("E:", "Err:"))]
        for name in alternatives:
            before = set(glob.glob(os.path.join(dest, "*.deb")))
            rc, out = _apt(options, ["download", "-q", name], cwd=dest)
            log.append("apt-get download %s -> %d\n%s" % (name, rc, out[-2000:]))
            new = sorted(set(glob.glob(os.path.join(dest, "*.deb"))) - before)
            if rc == 0:
                match = [p for p in new + sorted(before) if os.path.basename(p).startswith(name + "_")]
                if match:
                    return match[0]
    wanted = " or ".join(alternatives)
    if update_errors:
        # Say first what went wrong: a failed index download, not an unknown name. "Mirror sync in
        # progress?" (an index whose size or hash differs from the signed Release file) is the
        # usual one, from a mirror mid-sync or a proxy that serves a stale copy; apt rejects the
        # index, rightly, so its packages cannot be found.
        raise PackageUnavailable(
            "could not download %s for %s: apt-get update could not fetch the package indexes (%s). "
            "If the mirror is mid-sync this passes; otherwise point FLEETBOOT_LAB_MIRROR / "
            "FLEETBOOT_LAB_SECURITY_MIRROR at another Debian mirror. apt's output:\n%s"
            % (wanted, arch, "; ".join(update_errors[:3]), "\n".join(log)))
    raise PackageUnavailable("could not download %s for %s (no such package in bookworm, or no network):\n%s"
                             % (wanted, arch, "\n".join(log)))


def extract(deb, dest):
    """Unpack a .deb's files into ``dest`` (dpkg-deb -x: no maintainer script runs)."""
    os.makedirs(dest, exist_ok=True)
    proc = subprocess.run(["dpkg-deb", "-x", deb, dest], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    if proc.returncode != 0:
        raise PackageUnavailable("dpkg-deb -x %s failed:\n%s" % (deb, proc.stdout))
    return dest
