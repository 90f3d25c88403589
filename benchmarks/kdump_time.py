"""Time from a panic to the host answering SSH again with its vmcore saved, on one lab VM, and
where that time goes.

One VM (2 GiB, started without -no-reboot so the capture kernel's firmware reboot comes back, and
with crashkernel=256M on QEMU's command line so that every boot reserves it) is set up with the
kdump role (kdump.yml, its defaults: makedumpfile installed and used). Each round loads the crash
kernel with one method (the role again, with kdump_method) and crashes the VM with
`echo c > /proc/sysrq-trigger` through `fleetboot.kexec.kdump_crash`, which reports panic -> SSH on
a normal boot with the dump saved (`elapsed`).

Meanwhile the serial console is stamped on the host's clock (lab/console.py) and a prober asks
the VM for its boot_id every half second with short SSH attempts (lab/ssh.py), which splits a
round into: panic -> capture kernel's first line (the jump) -> the capture unit starting (capture
boot) -> save-vmcore's report (saving) -> "reboot: Restarting system" (capture shutdown) -> the
normal kernel's first line (firmware) -> SSH answering (boot) -> kdump_crash noticing (its
polling). Each method's report gives those medians, the dump's size and the RAM it covers, and
the ratio to a plain boot of the same VM (QEMU start -> SSH), measured in the same run.

    .venv/bin/python benchmarks/kdump_time.py [--rounds 1] [--methods classic,file] [--json]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lab import ssh  # noqa: E402
from lab.console import ConsoleWatch  # noqa: E402
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
PANIC = r"sysrq: Trigger a crash"
FIRST_LINE = r"Linux version \d"
# systemd's status line shortens the unit name ("fleetboot-kdump-c…") and colours it.
CAPTURE_UNIT = r"Starting .*fleetboot-kdump-c"
# save-vmcore's report, printed by the unit once the dump is saved: "fleetboot-kexec[PID]: key: value".
SAVED = r"fleetboot-kexec\[\d+\]: (bytes_written|seconds|vmcore): "
RESET = r"reboot: Restarting system"
PHASES = ("jump", "capture_boot", "saving", "capture_shutdown", "firmware", "boot", "noticed", "total")


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


class Prober:
    """Asks the VM for its boot_id every PROBE_INTERVAL; ``answers`` is {boot_id: (first host time,
    capture kernel?)}."""

    def __init__(self, fleet, vm):
        self.port, self.key = vm.port, fleet.key_file
        self.answers = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)
        return False

    def _run(self):
        while not self._stop.is_set():
            try:
                rc, out = ssh.run(self.port, self.key, "cat /proc/sys/kernel/random/boot_id; "
                                  "test -e /proc/vmcore && echo capture || true", timeout=ssh.PROBE_TIMEOUT)[:2]
                words = out.split()
                if rc == 0 and words and words[0] not in self.answers:
                    self.answers[words[0]] = (time.monotonic(), "capture" in words[1:])
            except Exception:  # pylint: disable=broad-except  # down: keep probing
                pass
            self._stop.wait(ssh.PROBE_INTERVAL)


def ram_bytes(fleet):
    rc, out, err = fleet.run("vm1", "cat /proc/iomem")
    return sum(int(m.group(2), 16) - int(m.group(1), 16) + 1
               for m in re.finditer(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM$", out, re.M))


def one_round(fleet, method, workdir):
    playbook(fleet, os.path.join(REPO, "kdump.yml"), "-e", "kdump_method=%s" % method)
    play = os.path.join(workdir, "crash.yml")
    with open(play, "w") as f:
        f.write(CRASH_PLAY)
    out = os.path.join(workdir, "crash-%s.json" % method)
    vm = fleet.vm("vm1")
    old = fleet.run("vm1", "cat /proc/sys/kernel/random/boot_id")[1].strip()
    with ConsoleWatch(vm.serial_log) as console, Prober(fleet, vm) as prober:
        start = time.monotonic()
        playbook(fleet, play, "-e", "out=%s" % out)
        done = time.monotonic()
    with open(out) as f:
        result = json.load(f)
    marks = {}
    panic = console.find(PANIC, after=start)
    marks["panic"] = panic[0] if panic else None
    capture = console.find(FIRST_LINE, after=marks["panic"]) if panic else None
    marks["capture_kernel"] = capture[0] if capture else None
    unit = console.find(CAPTURE_UNIT, after=marks["capture_kernel"]) if capture else None
    marks["capture_unit"] = unit[0] if unit else None
    saved = console.find(SAVED, after=marks["capture_unit"]) if unit else None
    marks["saved"] = saved[0] if saved else None
    reset = console.find(RESET, after=marks["capture_kernel"]) if capture else None
    marks["reset"] = reset[0] if reset else None
    normal = console.find(FIRST_LINE, after=marks["reset"]) if reset else None
    marks["normal_kernel"] = normal[0] if normal else None
    normal_answers = [t for boot, (t, cap) in prober.answers.items() if boot != old and not cap]
    marks["ssh"] = min(normal_answers) if normal_answers else None
    marks["noticed"] = marks["panic"] + result["elapsed"] if panic else None

    def span(a, b):
        return round(marks[b] - marks[a], 1) if marks.get(a) is not None and marks.get(b) is not None else None
    phases = {"jump": span("panic", "capture_kernel"), "capture_boot": span("capture_kernel", "capture_unit"),
              "saving": span("capture_unit", "saved"), "capture_shutdown": span("saved", "reset"),
              "firmware": span("reset", "normal_kernel"), "boot": span("normal_kernel", "ssh"),
              "noticed": span("ssh", "noticed"), "total": result["elapsed"]}
    record = result.get("capture_record") or {}
    return {"method": method, "elapsed": result["elapsed"], "capture_answered": result.get("capture_answered"),
            "vmcore_size": result.get("vmcore_size"), "vmcore": result.get("vmcore"), "phases": phases,
            "dump_writer": record.get("method"), "compression": record.get("compression"),
            "play_seconds": round(done - start, 1)}


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
        fleet.up(hosts=1, memory=2048, no_reboot=False, append="crashkernel=256M", die_with_parent=True)
        boot = time.monotonic() - start
        ram = ram_bytes(fleet)
        with tempfile.TemporaryDirectory() as workdir:
            for i in range(args.rounds):
                for method in methods:
                    r = one_round(fleet, method, workdir)
                    r["round"] = i + 1
                    rounds.append(r)
                    sys.stderr.write("round %d %s: panic -> SSH with vmcore %.1f s; phases %s; dump %s bytes\n"
                                     % (i + 1, method, r["elapsed"], json.dumps(r["phases"]), r["vmcore_size"]))
    finally:
        fleet.down()
    report = {"plain_boot_seconds": round(boot, 1), "ram_bytes": ram, "rounds": rounds, "methods": {}}
    for method in methods:
        mine = [r for r in rounds if r["method"] == method]
        median = statistics.median(r["elapsed"] for r in mine)
        phases = {}
        for phase in PHASES:
            values = [r["phases"][phase] for r in mine if r["phases"][phase] is not None]
            phases[phase] = round(statistics.median(values), 1) if values else None
        size = statistics.median(r["vmcore_size"] for r in mine)
        report["methods"][method] = {"median_seconds": round(median, 1), "runs": [r["elapsed"] for r in mine],
                                     "ratio_to_plain_boot": round(median / boot, 2), "phases": phases,
                                     "vmcore_bytes": int(size), "ram_bytes": ram,
                                     "ram_to_dump_ratio": round(ram / float(size), 1) if size else None,
                                     "dump_writer": mine[-1]["dump_writer"], "compression": mine[-1]["compression"]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("plain boot of the VM (QEMU start -> SSH): %.1f s; RAM %.0f MiB" % (boot, ram / 1048576.0))
        for method, m in sorted(report["methods"].items()):
            print("kdump %-7s panic -> SSH with vmcore saved: median %.1f s %s = %.2fx a plain boot; dump %.1f MiB "
                  "by %s (%s), RAM/dump %.1fx" % (method, m["median_seconds"], m["runs"], m["ratio_to_plain_boot"],
                                                  m["vmcore_bytes"] / 1048576.0, m["dump_writer"], m["compression"],
                                                  m["ram_to_dump_ratio"] or 0))
            print("        phases (s): " + ", ".join("%s %s" % (p, m["phases"][p]) for p in PHASES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
