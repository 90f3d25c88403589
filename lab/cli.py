"""`python -m lab`: build the image, bring a VM fleet up, look at it, take it down.

    python -m lab build [--arch x86_64|arm64|ppc64le|all|LIST]
    python -m lab up --hosts 3 [--memory 1024] [--cpus 1] [--append crashkernel=256M] [--uefi]
    python -m lab up --arch arm64 [--uefi]        # Debian arm64 on virt (TCG); --uefi: AAVMF, ACPI
    python -m lab up --arch ppc64le               # Debian ppc64el on pseries, SLOF (TCG)
    python -m lab up --arch x86_64,arm64,ppc64le --hosts 1   # one VM of each, one inventory
    python -m lab status [--json]
    python -m lab ssh vm1 [command...]
    python -m lab console vm1 [--lines 60]
    python -m lab down
"""

import argparse
import json
import os
import signal
import sys

from lab import arches, foreign
from lab.fleet import Fleet, SSH_OPTIONS
from lab.image import LabError


def _parser():
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n", maxsplit=1)[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default=os.environ.get("FLEETBOOT_LAB_FLEET", "lab"),
                   help="fleet name (state under .lab/NAME); default %(default)s")
    sub = p.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="build (or reuse) the cached lab image(s) and print the directory of each")
    build.add_argument("--arch", default="all",
                       help="x86_64, arm64, ppc64le, a comma-separated list or all (default %(default)s, what "
                       "`make test` needs); "
                       "several are built in parallel, each logging to --log-dir/lab-build-<arch>.out")
    build.add_argument("--log-dir", default=None,
                       help="with several architectures: where each build's output goes (default: stderr)")

    up = sub.add_parser("up", help="boot a fleet of VMs and wait until they answer SSH")
    up.add_argument("--hosts", type=int, default=2)
    up.add_argument("--memory", type=int, default=1024, help="MiB per VM (default %(default)s)")
    up.add_argument("--cpus", type=int, default=1)
    up.add_argument("--append", default="", help="extra kernel command line, e.g. crashkernel=256M")
    up.add_argument("--arch", default="x86_64",
                    help="x86_64, arm64, ppc64le, a comma-separated list or all: --hosts VMs of each "
                    "(default %(default)s)")
    up.add_argument("--uefi", action="store_true",
                    help="boot through UEFI firmware: OVMF on x86_64 instead of SeaBIOS, AAVMF on arm64 "
                    "(ACPI, EFI memory map) instead of QEMU's device tree")
    up.add_argument("--allow-reboot", action="store_true",
                    help="let firmware resets reboot the VM (no -no-reboot), for cold-reboot tests")
    up.add_argument("--post-delay", type=float, default=0, metavar="SECONDS",
                    help="SIMULATED firmware POST: the firmware waits this long before each boot through it "
                         "(a cold reboot pays it, a kexec does not; real servers spend 1-5 minutes in POST)")
    up.add_argument("--kernel", default=None,
                    help="boot this kernel release of the image instead of its boot kernel "
                    "(e.g. 6.12.118+deb12-powerpc64le, the 4 KiB-page ppc64le kernel)")
    up.add_argument("--prefix", default="vm", help="VM name prefix (default %(default)s)")
    up.add_argument("--timeout", type=int, default=300, help="seconds to wait for SSH")

    st = sub.add_parser("status", help="show each VM: running, or why its QEMU process ended")
    st.add_argument("--json", action="store_true")

    sh = sub.add_parser("ssh", help="ssh into a VM (or run a command there)")
    sh.add_argument("host")
    sh.add_argument("remote", nargs=argparse.REMAINDER)

    con = sub.add_parser("console", help="print the tail of a VM's serial console log")
    con.add_argument("host")
    con.add_argument("--lines", type=int, default=60)

    sub.add_parser("inventory", help="print the path of the fleet's Ansible inventory")
    sub.add_parser("down", help="stop every VM of the fleet")
    return p


EPILOG = """architectures:
  x86_64   Debian bookworm amd64, pc machine, SeaBIOS (OVMF with --uefi), console ttyS0
  arm64    Debian bookworm arm64, virt machine, cortex-a72, QEMU's device tree (AAVMF + ACPI with
           --uefi), console ttyAMA0
  ppc64le  Debian bookworm ppc64el, pseries machine, POWER9, SLOF, console hvc0
All run under TCG. Foreign images are built without running foreign code on this machine: the
second debootstrap stage runs inside a VM of that architecture, and their VMs boot a small
host-built initramfs (lab/initramfs.py). The inventory puts every VM in group `lab` and in
`lab_<arch>`. Images are cached under ~/.cache/fleetboot/lab (FLEETBOOT_LAB_CACHE).
"""


def _build(chosen, log_dir):
    """Build (or reuse) each architecture's image; several at once in parallel processes."""
    if len(chosen) == 1:
        print(foreign.image_for(chosen[0]).directory)
        return 0
    import subprocess  # pylint: disable=import-outside-toplevel  # only the parallel build needs it
    procs = []
    for arch in chosen:
        cmd = [sys.executable, "-m", "lab", "build", "--arch", arch.name]
        log = open(os.path.join(log_dir, "lab-build-%s.out" % arch.name), "w") if log_dir else None
        procs.append((arch, log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT if log else None)))
    failed = []
    for arch, log, proc in procs:
        if proc.wait() != 0:
            failed.append(arch.name)
        if log:
            log.close()
    if failed:
        sys.stderr.write("lab: error: the %s build failed%s\n"
                         % (", ".join(failed), " (see %s/lab-build-<arch>.out)" % log_dir if log_dir else ""))
        return 1
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt()


def main(argv=None):
    args = _parser().parse_args(argv)
    fleet = Fleet(args.name)
    # SIGTERM (from CI or a test harness) unwinds like Ctrl-C, so VMs get stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command == "build":
            return _build(arches.parse_list(args.arch), args.log_dir)
        elif args.command == "up":
            fleet.up(hosts=args.hosts, memory=args.memory, cpus=args.cpus, append=args.append,
                     uefi=args.uefi, no_reboot=not args.allow_reboot, prefix=args.prefix,
                     timeout=args.timeout, arch=args.arch, kernel=args.kernel, post_delay=args.post_delay)
            print(fleet.inventory)
        elif args.command == "status":
            status = fleet.load().status()
            if args.json:
                print(json.dumps(status, indent=2))
            for s in ([] if args.json else status):
                state = "running" if s["running"] else "EXITED: " + s["exit_reason"]
                machine = s["arch"] + ("/uefi" if s["uefi"] else "")
                print("%-8s %-12s pid %-7s port %-5s %s" % (s["name"], machine, s["pid"], s["port"], state))
            resets = fleet.firmware_resets()
            if resets and not args.json:
                print("firmware resets (or crashes): %s" % ", ".join(resets))
            return 3 if resets else 0
        elif args.command == "ssh":
            vm = fleet.load().vm(args.host)
            cmd = ["ssh", "-i", fleet.key_for(vm), "-p", str(vm.port)] + SSH_OPTIONS.split()
            cmd += ["root@127.0.0.1"] + args.remote
            os.execvp("ssh", cmd)
        elif args.command == "console":
            vm = fleet.load().vm(args.host)
            print("==> %s <==" % vm.serial_log)
            print(vm.serial_tail(args.lines))
        elif args.command == "inventory":
            fleet.load()
            print(fleet.inventory)
        elif args.command == "down":
            fleet.down()
        return 0
    except LabError as e:
        sys.stderr.write("lab: error: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("lab: interrupted\n")
        return 130
