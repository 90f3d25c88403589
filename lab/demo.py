"""`make demo`: a rolling kexec upgrade of a lab fleet, end to end.

Boots 3 lab VMs on the older kernel (6.1.0-54), runs kexec-upgrade.yml over them two at a time
to 6.1.0-56 (installed through the package, which the lab image already carries), prints each
host's old and new release, its downtime and how it rebooted, and counts firmware resets: a VM
whose QEMU process ended went through the firmware (the lab runs QEMU with -no-reboot), so
"firmware resets: 0" means every host moved by kexec alone. The fleet is taken down at the end.
Exit status 0 only when every host runs the new kernel and no VM was reset.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from lab.fleet import REPO, Fleet
from lab.image import LabError

HOSTS = int(os.environ.get("DEMO_HOSTS", "3"))
SERIAL = int(os.environ.get("DEMO_SERIAL", "2"))
PACKAGE = os.environ.get("DEMO_PACKAGE", "linux-image-6.1.0-56-amd64")
TARGET = os.environ.get("DEMO_RELEASE", "6.1.0-56-amd64")


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
