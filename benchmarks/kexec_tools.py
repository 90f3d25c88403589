"""kexec-tools for comparison runs: Debian's package, downloaded and unpacked, never installed.

The collection never needs kexec-tools; the benchmarks compare against it. ``kexec_tools()``
fetches the package with `apt-get download` into the cache and unpacks it with `dpkg-deb -x`.
"""

import glob
import os
import subprocess

from tests.kernels import cache_root

# kexec-tools links libxenctrl (for Xen hosts); its Xen libraries come along, unpacked beside it.
KEXEC_TOOLS_PACKAGES = ["kexec-tools", "libxenmisc4.17", "libxencall1", "libxendevicemodel1",
                        "libxenevtchn1", "libxenforeignmemory1", "libxengnttab1", "libxenhypfs1",
                        "libxenstore4", "libxentoollog1", "libxentoolcore1", "libyajl2"]


def kexec_tools_tree():
    """The directory Debian's kexec-tools (and the libraries it links) is unpacked in."""
    root = os.path.join(cache_root(), "kexec-tools")
    tree = os.path.join(root, "tree")
    if not os.path.exists(os.path.join(root, ".complete")):
        os.makedirs(root, exist_ok=True)
        subprocess.run(["apt-get", "download", "-q"] + KEXEC_TOOLS_PACKAGES, cwd=root, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for deb in glob.glob(os.path.join(root, "*.deb")):
            subprocess.run(["dpkg-deb", "-x", deb, tree], check=True)
        open(os.path.join(root, ".complete"), "w").close()
    return tree


def library_dir(tree):
    """Where the unpacked libraries are (for LD_LIBRARY_PATH)."""
    return os.path.join(tree, "usr", "lib", "x86_64-linux-gnu")


def kexec_tools():
    """(path of kexec, environment) from Debian's packages, unpacked in the cache, not installed."""
    tree = kexec_tools_tree()
    env = dict(os.environ, LD_LIBRARY_PATH=library_dir(tree))
    return os.path.join(tree, "sbin", "kexec"), env
