"""`make demo`: a rolling kexec upgrade of a lab fleet, end to end.

Boots 3 lab VMs on the older kernel (6.1.0-54), runs kexec-upgrade.yml over them two at a time
to 6.1.0-56 (installed through the package, which the lab image already carries), prints each
host's old and new release, its downtime and how it rebooted, and counts firmware resets: a VM
whose QEMU process ended went through the firmware (the lab runs QEMU with -no-reboot), so
"firmware resets: 0" means every host moved by kexec alone. The fleet is taken down at the end.

Then what the saving means: two more VMs, one whose firmware waits DEMO_POST_DELAY seconds
(default 60) before it boots -- a SIMULATED server POST, labelled so wherever it is printed -- and
one without, are each rebooted once by kexec (our loader, kexec_load) and once cold through the
firmware, at the same time; the table shows trigger -> SSH for each and the ratio. Under TCG a
cold reboot of a VM costs about what a kexec does; on a server, POST is what kexec skips.
Exit status 0 only when every host runs the new kernel and no VM was reset.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from lab.fleet import REPO, Fleet
from lab.image import LabError
from lab.reboot_timing import RebootTimer

HOSTS = int(os.environ.get("DEMO_HOSTS", "3"))
SERIAL = int(os.environ.get("DEMO_SERIAL", "2"))
PACKAGE = os.environ.get("DEMO_PACKAGE", "linux-image-6.1.0-56-amd64")
TARGET = os.environ.get("DEMO_RELEASE", "6.1.0-56-amd64")
POST_DELAY = float(os.environ.get("DEMO_POST_DELAY", "60"))
SIMULATED = "SIMULATED POST"


def run_playbook(fleet, summary_file):
    """Run kexec-upgrade.yml over the fleet, streaming its output; return its exit status."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", fleet.inventory,
           os.path.join(REPO, "kexec-upgrade.yml"),
           "-e", "kexec_upgrade_serial=%d" % SERIAL,
           "-e", "kexec_upgrade_package=%s" % PACKAGE,
           "-e", "kexec_upgrade_release=%s" % TARGET,
           "-e", "kexec_upgrade_summary_file=%s" % summary_file]
    print("$ " + " ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd)), flush=True)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH")
               or os.path.join(REPO, ".build", "collections"))
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          env=env, cwd=REPO) as proc:
        header = None
        for line in proc.stdout:
            # The role's skipped steps are noise in a demo: a task header is shown only with
            # a result that is not "skipping"; everything else is shown as it happens.
            if line.startswith("TASK ["):
                header = line
                continue
            if line.startswith("skipping:") or (header and not line.strip()):
                continue
            if header:
                sys.stdout.write("\n" + header)
                header = None
            sys.stdout.write(line)
            sys.stdout.flush()
        return proc.wait()


def report(fleet, rows, identities):
    """Print the table; return the list of problems (empty when the demo succeeded)."""
    problems = []
    by_host = {r["host"]: r for r in rows}
    print("\n%-6s %-16s %-16s %9s  %-7s %s" % ("host", "old", "new", "downtime", "method", "qemu process"))
    for vm in fleet.vms:
        r = by_host.get(vm.name, {})
        same = vm.running() and (vm.pid, vm.start_time) == identities[vm.name]
        downtime = "%.1f s" % r["downtime"] if r.get("downtime") is not None else "-"
        qemu = "pid %d, the one that started" % vm.pid if same else "ENDED"
        cells = (vm.name, r.get("old_release") or "?", r.get("new_release") or "?", downtime,
                 r.get("method") or "-", qemu)
        print("%-6s %-16s %-16s %9s  %-7s %s" % cells)
        if r.get("status") != "upgraded" or r.get("new_release") != TARGET:
            problems.append("%s: %s" % (vm.name, r.get("msg") or "no result"))
    resets = fleet.firmware_resets()
    print("firmware resets: %d%s" % (len(resets), " (%s)" % ", ".join(resets) if resets else ""))
    if resets:
        problems.append("firmware resets: %s" % ", ".join(resets))
    return problems


def time_reboots(name, post_delay, results):
    """Boot one VM (firmware resets allowed) and time a kexec and a cold reboot of it."""
    fleet = Fleet(name)
    if fleet.exists():
        fleet.down()
    try:
        fleet.up(hosts=1, no_reboot=False, kernel=TARGET, post_delay=post_delay, die_with_parent=True,
                 debian_initrd=True)
        timer = RebootTimer(fleet, fleet.vms[0], TARGET)
        timer.ship()
        results[post_delay] = {path: timer.reboot(path)["total"] for path in ("ours-classic", "cold")}
    except LabError as e:
        results[post_delay] = e
    finally:
        fleet.down()


def post_comparison():
    """kexec vs cold, without and with a simulated POST, two VMs at once; returns problems."""
    results = {}
    delays = [0, POST_DELAY] if POST_DELAY else [0]
    threads = [threading.Thread(target=time_reboots, args=("demo-post-%g" % d, d, results)) for d in delays]
    print("\nWhat kexec saves: one VM rebooted by kexec and cold%s, trigger -> SSH answering"
          % (" (and one with a %s of %g s)" % (SIMULATED, POST_DELAY) if POST_DELAY else ""), flush=True)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    problems = []
    print("%-34s %12s %12s %11s" % ("firmware", "kexec", "cold", "kexec/cold"))
    for delay in delays:
        label = "%s %g s" % (SIMULATED, delay) if delay else "no POST delay (TCG, as it is)"
        got = results.get(delay)
        if not isinstance(got, dict):
            problems.append("%s: %s" % (label, got))
            print("%-34s %s" % (label, got))
            continue
        kexec, cold = got["ours-classic"], got["cold"]
        print("%-34s %10.1f s %10.1f s %10.2fx" % (label, kexec, cold, kexec / cold))
    return problems


def main():
    fleet = Fleet("demo")
    if fleet.exists():
        fleet.down()
    started = time.time()
    summary_file = os.path.join(tempfile.mkdtemp(prefix="fleetboot-demo-"), "summary.json")
    try:
        fleet.up(hosts=HOSTS, die_with_parent=True)
        identities = {vm.name: (vm.pid, vm.start_time) for vm in fleet.vms}
        rc = run_playbook(fleet, summary_file)
        rows = []
        if os.path.exists(summary_file):
            with open(summary_file) as f:
                rows = json.load(f)
        problems = report(fleet, rows, identities)
        if rc != 0:
            problems.insert(0, "ansible-playbook exited %d" % rc)
        fleet.down()
        problems += post_comparison()
        if problems:
            raise LabError("; ".join(problems))
    except LabError as e:
        sys.stderr.write("demo: error: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        fleet.down()
        if os.path.exists(summary_file):
            os.unlink(summary_file)
        os.rmdir(os.path.dirname(summary_file))
    print("demo: %d hosts on %s by kexec in %.0f s, no VM left running" % (HOSTS, TARGET, time.time() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
