"""Time from a panic to the host answering SSH again with its vmcore saved, on one lab VM.

One VM (2 GiB, started without -no-reboot so the capture kernel's firmware reboot comes back) is
set up with the kdump role (kdump.yml: crashkernel= applied by a kexec reboot, the crash kernel
loaded by its unit). Each round crashes it with `echo c > /proc/sysrq-trigger` through the
`fleetboot.kexec.kdump_crash` action, which times panic -> capture kernel -> vmcore saved ->
reboot -> SSH on a normal boot (`elapsed`) and when the capture kernel first answered.

The lab boots QEMU's own -kernel/-append after that firmware reboot, without crashkernel=, so
every round runs kdump.yml again first (one more kexec reboot; not part of the measurement).
The report gives the medians per load method and, as a ratio, how they compare with a plain
boot of the same VM (QEMU start to SSH), measured in the same run.

    .venv/bin/python benchmarks/kdump_time.py [--rounds 1] [--methods classic,file] [--json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lab.fleet import Fleet  # noqa: E402

BIN = os.path.dirname(sys.executable)
CRASH_PLAY = textwrap.dedent("""\
    - hosts: lab
      gather_facts: false
      become: true
      tasks:
        - name: Crash the host and wait for its vmcore
          fleetboot.kexec.kdump_crash:
            timeout: 1200
          register: crash
        - name: Save the result on the controller
          ansible.builtin.copy:
            content: "{{ crash | to_json }}"
            dest: "{{ out }}"
            mode: "0644"
          delegate_to: localhost
          become: false
    """)


def ansible_env():
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
                ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="False")


def playbook(fleet, path, *extra):
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", fleet.inventory, path] + list(extra)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          env=ansible_env(), cwd=REPO, check=False, timeout=2400)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-6000:])
        raise SystemExit("kdump_time: %s failed (exit %d)" % (os.path.basename(path), proc.returncode))
    return proc.stdout


def one_round(fleet, method, workdir):
    playbook(fleet, os.path.join(REPO, "kdump.yml"), "-e", "kdump_method=%s" % method, "-e", "kdump_reboot_ok=true")
    play = os.path.join(workdir, "crash.yml")
    with open(play, "w") as f:
        f.write(CRASH_PLAY)
    out = os.path.join(workdir, "crash-%s.json" % method)
    playbook(fleet, play, "-e", "out=%s" % out)
    with open(out) as f:
        result = json.load(f)
    return {"method": method, "elapsed": result["elapsed"], "capture_answered": result.get("capture_answered"),
            "vmcore_size": result.get("vmcore_size"), "vmcore": result.get("vmcore")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--methods", default="classic,file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    fleet = Fleet("bench-kdump")
    if fleet.exists():
        fleet.down()
    rounds = []
    try:
        start = time.monotonic()
        fleet.up(hosts=1, memory=2048, no_reboot=False, die_with_parent=True)
        boot = time.monotonic() - start
        with tempfile.TemporaryDirectory() as workdir:
            for i in range(args.rounds):
                for method in methods:
                    r = one_round(fleet, method, workdir)
                    r["round"] = i + 1
                    rounds.append(r)
                    sys.stderr.write("round %d %s: panic -> SSH with vmcore %.1f s (capture kernel answered "
                                     "after %s s)\n" % (i + 1, method, r["elapsed"], r["capture_answered"]))
    finally:
        fleet.down()
    report = {"plain_boot_seconds": round(boot, 1), "rounds": rounds, "methods": {}}
    for method in methods:
        times = [r["elapsed"] for r in rounds if r["method"] == method]
        median = statistics.median(times)
        report["methods"][method] = {"median_seconds": round(median, 1), "runs": times,
                                     "ratio_to_plain_boot": round(median / boot, 2)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("plain boot of the VM (QEMU start -> SSH): %.1f s" % boot)
        for method, m in sorted(report["methods"].items()):
            print("kdump %-7s panic -> SSH with vmcore saved: median %.1f s %s = %.2fx a plain boot"
                  % (method, m["median_seconds"], m["runs"], m["ratio_to_plain_boot"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
