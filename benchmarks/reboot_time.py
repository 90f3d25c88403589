"""Reboot time of one lab VM: fleetboot.kexec.kexec_reboot vs ansible.builtin.reboot, same run.

One VM (started without -no-reboot, so a cold reboot can come back) is rebooted alternately:
by kexec (the loader loads 6.1.0-56, `fleetboot.kexec.kexec_reboot` jumps) and cold
(`ansible.builtin.reboot`, after unloading the image so systemd cannot turn it into a kexec).
Each reboot is timed from the task's start to the host answering SSH on its new boot: the
`elapsed` both tasks report. The report gives the medians and their ratio.

Under QEMU/TCG the firmware is SeaBIOS and POST takes about a second, so the gap here is much
smaller than on real servers, whose firmware often spends minutes in POST.

    .venv/bin/python benchmarks/reboot_time.py [--rounds 2] [--json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lab.fleet import Fleet  # noqa: E402

BIN = os.path.dirname(sys.executable)
LOADER = os.path.join(REPO, "plugins", "module_utils", "kexec")
NEW = "6.1.0-56-amd64"
PLAYBOOK = textwrap.dedent("""\
    - hosts: lab
      gather_facts: false
      tasks:
        - name: Load {new} with the collection's loader
          fleetboot.kexec.kexec_load:
            kernel: /boot/vmlinuz-{new}
            initrd: /boot/initrd.img-{new}
            reuse_cmdline: true
          when: how == 'kexec'
        - name: Make sure nothing is loaded before a cold reboot
          fleetboot.kexec.kexec_load:
            state: unloaded
          when: how == 'cold'
        - name: Reboot by kexec
          fleetboot.kexec.kexec_reboot:
            reboot_timeout: 900
          register: kexec_result
          when: how == 'kexec'
        - name: Reboot cold
          ansible.builtin.reboot:
            reboot_timeout: 900
          register: cold_result
          when: how == 'cold'
        - name: Save the elapsed time
          ansible.builtin.copy:
            content: "{{{{ (kexec_result if how == 'kexec' else cold_result).elapsed }}}}"
            dest: "{{{{ out }}}}"
            mode: "0644"
          delegate_to: localhost
    """).format(new=NEW)


def reboot(fleet, how, workdir):
    book = os.path.join(workdir, "reboot.yml")
    with open(book, "w") as f:
        f.write(PLAYBOOK)
    out = os.path.join(workdir, "elapsed-%s" % how)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="False")
    res = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", fleet.inventory, book,
                          "-e", "how=%s out=%s" % (how, out)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    if res.returncode != 0:
        sys.exit("the %s reboot failed:\n%s" % (how, res.stdout[-3000:]))
    with open(out) as f:
        return float(f.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    fleet = Fleet("bench-reboot")
    if fleet.exists():
        fleet.down()
    times = {"kexec": [], "cold": []}
    try:
        fleet.up(hosts=1, no_reboot=False, die_with_parent=True)
        with tempfile.TemporaryDirectory() as workdir:
            for dummy in range(args.rounds):
                for how in ("kexec", "cold"):
                    times[how].append(reboot(fleet, how, workdir))
    finally:
        fleet.down()
    report = {"rounds": args.rounds, "kexec_s": times["kexec"], "cold_s": times["cold"],
              "kexec_median_s": statistics.median(times["kexec"]),
              "cold_median_s": statistics.median(times["cold"])}
    report["ratio"] = round(report["kexec_median_s"] / report["cold_median_s"], 3)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("reboot of one lab VM to SSH answering on the new boot, %d rounds" % args.rounds)
        print("  kexec (fleetboot.kexec.kexec_reboot): median %.1f s  %s" % (report["kexec_median_s"], times["kexec"]))
        print("  cold  (ansible.builtin.reboot):       median %.1f s  %s" % (report["cold_median_s"], times["cold"]))
        print("  ratio kexec / cold: %.2fx" % report["ratio"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
