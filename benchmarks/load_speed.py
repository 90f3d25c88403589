"""Load speed and memory: our `load --dry-run` vs kexec-tools' `kexec -l`, same inputs, same run.

Input: Debian's vmlinuz 6.1.0-56-amd64 and a 64 MiB initrd. kexec-tools runs unprivileged
(as nobody), so it does all its work and stops at the syscall with EPERM; ours runs
`load --dry-run`, which does every step (parsing, planning, purgatory link, sha256 of every
segment) but the syscall, started as the kdump role's /usr/sbin/fleetboot-kexec starts it on hosts
(`python3 -S -m kexec.cli`, the loader on PYTHONPATH), from a copy installed the way the role
installs it (roles/kdump/files/sync_loader.py: sources and their bytecode). Both are timed as whole processes (startup included), alternately,
several times; the report gives the median wall time and peak RSS of each and their ratios.
kexec-tools is fetched with `apt-get download` and unpacked into the cache: never installed.

    .venv/bin/python benchmarks/load_speed.py [--runs 7] [--json]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.kexec_tools import kexec_tools  # noqa: E402
from tests.kernels import cache_root, kernel_package  # noqa: E402

KERNEL_VERSION = "6.1.0-56-amd64"
INITRD_MIB = 64
APPEND = "root=/dev/vda rw console=ttyS0"
NOBODY = 65534


def initrd():
    """A 64 MiB initramfs (deterministic, incompressible): one newc cpio archive whose one member
    fills it, then the trailer, so the loader's initramfs walk and kexec-tools take it alike."""
    path = os.path.join(cache_root(), "bench-initrd-%dM-v3.img" % INITRD_MIB)
    total = INITRD_MIB << 20
    if not os.path.exists(path) or os.path.getsize(path) != total:
        import hashlib

        def header(name, size, mode):
            name = name.encode() + b"\0"
            fields = [1, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name), 0]
            head = b"070701" + b"".join(b"%08X" % f for f in fields) + name
            return head + b"\0" * (-len(head) % 4)
        trailer = header("TRAILER!!!", 0, 0)
        first = header("payload", 0, 0o100644)
        size = total - len(first) - len(trailer)
        size -= size % 4
        first = header("payload", size, 0o100644)
        with open(path + ".tmp", "wb") as f:
            f.write(first)
            left, i = size, 0
            while left:
                block = b"".join(hashlib.sha256(b"fleetboot%d" % (i * 32768 + j)).digest() for j in range(32768))
                f.write(block[:left])
                left -= min(left, len(block))
                i += 1
            f.write(trailer)
            f.write(b"\0" * (total - f.tell()))
        os.replace(path + ".tmp", path)
    return path


def install_loader(dest):
    """The loader under dest/kexec as the kdump role installs it on hosts: the role's own
    sync_loader.py, fed the collection's module_utils/kexec sources (it also writes their bytecode)."""
    src = os.path.join(REPO, "plugins", "module_utils", "kexec")
    bundle = {}
    for root, dummy, files in os.walk(src):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path) as f:
                    bundle[os.path.relpath(path, src)] = f.read()
    with open(os.path.join(REPO, "roles", "kdump", "files", "sync_loader.py")) as f:
        script = f.read()
    subprocess.run([sys.executable, "-c", script, os.path.join(dest, "kexec"), "write"],
                   input=json.dumps(bundle), universal_newlines=True, stdout=subprocess.DEVNULL, check=True)


def measure(argv, env=None, preexec=None):
    """Run argv once; return (exit status, wall seconds, peak RSS in MB, output tail)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=preexec)
    out = proc.stdout.read()
    dummy, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_maxrss / 1024.0, out.decode("utf-8", "replace")


def as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sysroot", help="recorded host tree our loader plans against",
                    default=os.path.join(REPO, "tests", "fixtures", "sysroots", "lab-seabios-pc-2g-crash"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    kernel = kernel_package(KERNEL_VERSION).vmlinuz
    rd = initrd()
    kexec, kexec_env = kexec_tools()
    # kexec-tools runs as nobody: it must be able to reach the inputs and its libraries.
    for path in (kernel, rd, kexec):
        os.chmod(path, os.stat(path).st_mode | 0o444)
        parent = os.path.dirname(path)
        while parent not in ("/", ""):
            os.chmod(parent, os.stat(parent).st_mode | 0o111)
            parent = os.path.dirname(parent)
    installed = tempfile.mkdtemp(prefix="fleetboot-bench-loader-")
    try:
        install_loader(installed)
        return report_on(args, kernel, rd, kexec, kexec_env, installed)
    finally:
        shutil.rmtree(installed)


def report_on(args, kernel, rd, kexec, kexec_env, installed):
    # Run as the kdump role's /usr/sbin/fleetboot-kexec runs it on hosts: python3 -S -m kexec.cli
    # with the loader's directory on PYTHONPATH.
    ours = [sys.executable, "-S", "-m", "kexec.cli", "load", "--dry-run",
            "--kernel", kernel, "--initrd", rd, "--append", APPEND, "--method", "classic",
            "--sysroot", args.sysroot]
    # A host's python3 reads the bytecode the role wrote; this machine's environment may say not to.
    ours_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    ours_env["PYTHONPATH"] = installed
    theirs = [kexec, "-l", kernel, "--initrd", rd, "--append", APPEND]

    results = {"ours": [], "kexec-tools": []}
    for dummy in range(args.runs):
        rc, wall, rss, out = measure(ours, env=ours_env)
        if rc != 0:
            sys.exit("our dry-run load failed (exit %d):\n%s" % (rc, out[-2000:]))
        results["ours"].append((wall, rss))
        rc, wall, rss, out = measure(theirs, env=kexec_env, preexec=as_nobody)
        # It must have done all its work and been refused only by the kernel (EPERM as nobody,
        # or ENOSYS on a kernel without kexec, like the development machines).
        if "kexec_load failed" not in out:
            sys.exit("kexec-tools did not stop at the syscall as expected:\n%s" % out[-2000:])
        results["kexec-tools"].append((wall, rss))

    report = {"kernel": KERNEL_VERSION, "initrd_mib": INITRD_MIB, "runs": args.runs}
    for name, samples in results.items():
        report[name] = {"median_wall_s": round(statistics.median(s[0] for s in samples), 4),
                        "peak_rss_mb": round(max(s[1] for s in samples), 1)}
    report["wall_ratio"] = round(report["ours"]["median_wall_s"] / report["kexec-tools"]["median_wall_s"], 3)
    report["rss_ratio"] = round(report["ours"]["peak_rss_mb"] / report["kexec-tools"]["peak_rss_mb"], 3)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("load of vmlinuz %s + %d MiB initrd, %d runs each" % (KERNEL_VERSION, INITRD_MIB, args.runs))
        for name in ("ours", "kexec-tools"):
            print("  %-12s median %.3f s   peak RSS %.1f MB"
                  % (name, report[name]["median_wall_s"], report[name]["peak_rss_mb"]))
        print("  ratio (ours / kexec-tools): wall %.2fx, peak RSS %.2fx"
              % (report["wall_ratio"], report["rss_ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
