"""`python -m lab`: build the image, bring a VM fleet up, look at it, take it down.

    python -m lab up --hosts 3 [--memory 1024] [--cpus 1] [--append crashkernel=256M] [--uefi]
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

from lab import image as lab_image
from lab.fleet import Fleet, SSH_OPTIONS
from lab.image import LabError


def _parser():
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n", maxsplit=1)[0])
    p.add_argument("--name", default=os.environ.get("FLEETBOOT_LAB_FLEET", "lab"),
                   help="fleet name (state under .lab/NAME); default %(default)s")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("build", help="build (or reuse) the cached lab image and print its directory")

    up = sub.add_parser("up", help="boot a fleet of VMs and wait until they answer SSH")
    up.add_argument("--hosts", type=int, default=2)
    up.add_argument("--memory", type=int, default=1024, help="MiB per VM (default %(default)s)")
    up.add_argument("--cpus", type=int, default=1)
    up.add_argument("--append", default="", help="extra kernel command line, e.g. crashkernel=256M")
    up.add_argument("--uefi", action="store_true", help="boot through OVMF instead of SeaBIOS")
    up.add_argument("--allow-reboot", action="store_true",
                    help="let firmware resets reboot the VM (no -no-reboot), for cold-reboot tests")
    up.add_argument("--post-delay", type=float, default=0, metavar="SECONDS",
                    help="SIMULATED firmware POST: the firmware waits this long before each boot through it "
                         "(a cold reboot pays it, a kexec does not; real servers spend 1-5 minutes in POST)")
    up.add_argument("--kernel", default=None, help="the release QEMU boots (default: the image's older kernel)")
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


def _interrupt(signum, frame):
    raise KeyboardInterrupt()


def main(argv=None):
    args = _parser().parse_args(argv)
    fleet = Fleet(args.name)
    # SIGTERM (from CI or a test harness) unwinds like Ctrl-C, so VMs get stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command == "build":
            print(lab_image.build().directory)
        elif args.command == "up":
            fleet.up(hosts=args.hosts, memory=args.memory, cpus=args.cpus, append=args.append,
                     uefi=args.uefi, no_reboot=not args.allow_reboot, prefix=args.prefix,
                     timeout=args.timeout, kernel=args.kernel, post_delay=args.post_delay)
            print(fleet.inventory)
        elif args.command == "status":
            status = fleet.load().status()
            if args.json:
                print(json.dumps(status, indent=2))
            for s in ([] if args.json else status):
                state = "running" if s["running"] else "EXITED: " + s["exit_reason"]
                print("%-8s pid %-7s port %-5s %s" % (s["name"], s["pid"], s["port"], state))
            resets = fleet.firmware_resets()
            if resets and not args.json:
                print("firmware resets (or crashes): %s" % ", ".join(resets))
            return 3 if resets else 0
        elif args.command == "ssh":
            vm = fleet.load().vm(args.host)
            cmd = ["ssh", "-i", fleet.key_file, "-p", str(vm.port)] + SSH_OPTIONS.split()
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
