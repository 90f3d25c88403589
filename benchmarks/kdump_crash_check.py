"""Open a lab kdump dump with `crash` and Debian's debug vmlinux: the panicking task's backtrace
must run through the sysrq handler.

This is the analysis a kdump user does with the dump, and it needs what `make test` should not
carry (measured here, see README: the `linux-image-<release>-dbg` package is 857 MB to download,
5.6 GB unpacked; its 632 MB vmlinux alone is what crash needs):

- the debug vmlinux of the crashed kernel, from `apt-get download linux-image-<release>-dbg`, of
  which only ./usr/lib/debug/boot/vmlinux-<release> is extracted (dpkg-deb --fsys-tarfile | tar
  --occurrence), cached in ~/.cache/fleetboot/debug/<release>/ (the .deb is deleted afterwards);
- `crash` itself, from `apt-get download crash` (and the two libraries it needs that the
  controller may lack, liblzo2-2 and libsnappy1v5), unpacked with dpkg-deb -x, never installed;
- a dump: --vmcore PATH, else the newest one the e2e file story left in
  ~/.cache/fleetboot/dumps/ (tests/e2e/kdump_flow.py keeps makedumpfile's dump there), else one
  made now on a lab VM (the kdump role with its defaults, a sysrq crash, the dump fetched).

    .venv/bin/python benchmarks/kdump_crash_check.py [--vmcore PATH --release 6.1.0-54-amd64] [--json]
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "fleetboot")
DEBUG = os.path.join(CACHE, "debug")
DUMPS = os.path.join(CACHE, "dumps")
CRASH_PACKAGES = ("crash", "liblzo2-2", "libsnappy1v5")
CRASH_COMMANDS = "sys\nbt\nlog\nquit\n"


def _run(argv, **kwargs):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          check=False, **kwargs)


def debug_vmlinux(release):
    """(path, {"download_s", "extract_s", "deb_bytes"}) of the cached debug vmlinux of ``release``."""
    root = os.path.join(DEBUG, release)
    vmlinux = os.path.join(root, "usr", "lib", "debug", "boot", "vmlinux-" + release)
    if os.path.exists(vmlinux + ".complete"):
        return vmlinux, {"cached": True}
    os.makedirs(root, exist_ok=True)
    work = tempfile.mkdtemp(dir=DEBUG)
    try:
        t0 = time.monotonic()
        proc = _run(["apt-get", "download", "-q", "linux-image-%s-dbg" % release], cwd=work)
        debs = glob.glob(os.path.join(work, "*.deb"))
        if proc.returncode != 0 or not debs:
            raise SystemExit("kdump_crash_check: cannot download linux-image-%s-dbg:\n%s" % (release, proc.stdout[-2000:]))
        t1 = time.monotonic()
        member = "./usr/lib/debug/boot/vmlinux-" + release
        # Only the vmlinux: tar stops after its first occurrence instead of unpacking 5.6 GB.
        pipe = "dpkg-deb --fsys-tarfile %s | tar -x -C %s --occurrence=1 %s" % (debs[0], root, member)
        _run(["sh", "-c", pipe])
        if not os.path.exists(vmlinux):
            raise SystemExit("kdump_crash_check: %s has no %s" % (debs[0], member))
        stats = {"cached": False, "deb_bytes": os.path.getsize(debs[0]), "download_s": round(t1 - t0, 1),
                 "extract_s": round(time.monotonic() - t1, 1), "vmlinux_bytes": os.path.getsize(vmlinux)}
        with open(vmlinux + ".complete", "w") as f:
            json.dump(stats, f)
        return vmlinux, stats
    finally:
        shutil.rmtree(work, ignore_errors=True)


def crash_tool():
    """(crash binary, LD_LIBRARY_PATH) unpacked from Debian's packages into the cache."""
    root = os.path.join(DEBUG, "crash-tool")
    binary = os.path.join(root, "usr", "bin", "crash")
    libs = ":".join(os.path.join(root, d) for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"))
    if os.path.exists(root + ".complete"):
        return binary, libs
    shutil.rmtree(root, ignore_errors=True)
    work = tempfile.mkdtemp(dir=DEBUG)
    try:
        for package in CRASH_PACKAGES:
            proc = _run(["apt-get", "download", "-q", package], cwd=work)
            if proc.returncode != 0:
                raise SystemExit("kdump_crash_check: cannot download %s:\n%s" % (package, proc.stdout[-2000:]))
        for deb in glob.glob(os.path.join(work, "*.deb")):
            _run(["dpkg-deb", "-x", deb, root])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    open(root + ".complete", "w").close()
    return binary, libs


def make_dump():
    """Crash a lab VM with the kdump role's defaults and fetch the dump: (path, release)."""
    # pylint: disable=import-outside-toplevel
    from lab import ssh
    from lab.fleet import Fleet
    from benchmarks.kdump_time import CRASH_PLAY, playbook
    fleet = Fleet("crash-check")
    if fleet.exists():
        fleet.down()
    try:
        fleet.up(hosts=1, memory=2048, no_reboot=False, append="crashkernel=256M", die_with_parent=True)
        playbook(fleet, os.path.join(REPO, "kdump.yml"))
        with tempfile.TemporaryDirectory() as work:
            play = os.path.join(work, "crash.yml")
            with open(play, "w") as f:
                f.write(CRASH_PLAY)
            out = os.path.join(work, "crash.json")
            playbook(fleet, play, "-e", "out=%s" % out)
            with open(out) as f:
                result = json.load(f)
        release = result["release"]
        os.makedirs(DUMPS, exist_ok=True)
        local = os.path.join(DUMPS, "%s-%s.vmcore" % (release, os.path.basename(os.path.dirname(result["vmcore"]))))
        ssh.get_file(fleet.vm("vm1").port, fleet.key_file, result["vmcore"], local)
        return local, release
    finally:
        fleet.down()


def newest_cached_dump():
    dumps = sorted(glob.glob(os.path.join(DUMPS, "*.vmcore")), key=os.path.getmtime)
    if not dumps:
        return None, None
    m = re.match(r"^(\d+\.\d+\.\d+-\d+-\w+)-", os.path.basename(dumps[-1]))
    return dumps[-1], m.group(1) if m else None


def analyse(vmcore, release):
    vmlinux, fetched = debug_vmlinux(release)
    binary, libs = crash_tool()
    t0 = time.monotonic()
    proc = subprocess.run([binary, "-s", vmlinux, vmcore], input=CRASH_COMMANDS, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, check=False, timeout=1200,
                          env=dict(os.environ, LD_LIBRARY_PATH=libs))
    seconds = time.monotonic() - t0
    text = proc.stdout
    bt = text[text.find("PID:"):] if "PID:" in text else ""
    frames = re.findall(r"#\d+ \[[0-9a-f]+\] (\w+) at", bt)
    report = {"vmcore": vmcore, "vmcore_bytes": os.path.getsize(vmcore), "release": release, "vmlinux": vmlinux,
              "fetch": fetched, "crash_seconds": round(seconds, 1), "crash_rc": proc.returncode, "frames": frames[:20],
              "panic": (re.search(r'PANIC: "([^"]*)"', text) or re.search(r"PANIC: (.*)", text) or [None, None])[1],
              "task": (re.search(r"COMMAND: \"([^\"]+)\"", text) or [None, None])[1]}
    report["ok"] = (proc.returncode == 0 and "sysrq_handle_crash" in frames and "__handle_sysrq" in frames
                    and "sysrq: Trigger a crash" in text)
    return report, text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--vmcore")
    ap.add_argument("--release", help="the crashed kernel's release (with --vmcore)")
    ap.add_argument("--fresh", action="store_true", help="make a new dump on a lab VM even if one is cached")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.vmcore:
        vmcore, release = args.vmcore, args.release
    else:
        vmcore, release = (None, None) if args.fresh else newest_cached_dump()
        if vmcore is None:
            vmcore, release = make_dump()
    if not release:
        raise SystemExit("kdump_crash_check: name the crashed kernel's release with --release")
    report, text = analyse(vmcore, release)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(text[-6000:])
        print("crash %s on %s (%d bytes): %s; backtrace %s; crash ran %.1f s; vmlinux %s"
              % (release, vmcore, report["vmcore_bytes"], "OK" if report["ok"] else "FAILED",
                 " <- ".join(report["frames"][:8]), report["crash_seconds"], json.dumps(report["fetch"])))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
