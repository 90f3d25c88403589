# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The capture kernel's subcommands of the CLI (``save-vmcore``, ``dmesg``) and their defaults.

Kept apart from save.py so that every other command (a load at each boot, a plan) builds its
parser without importing the dump writer and what it needs (subprocess, the vmcore reader).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from . import DEFAULT_DEST, DEFAULT_DUMP_LEVEL, DEFAULT_VMCORE, MAKEDUMPFILE_MODES

COMMANDS = ("save-vmcore", "dmesg")


def add_parsers(sub):
    """Add the ``save-vmcore`` and ``dmesg`` subcommands to the CLI's subparsers."""
    p = sub.add_parser("save-vmcore", help="in the capture kernel: save /proc/vmcore and its kernel log")
    p.add_argument("--vmcore", default=DEFAULT_VMCORE, metavar="PATH", help="crash dump to save (default %(default)s)")
    p.add_argument("--dest", default=DEFAULT_DEST, metavar="DIR", help="directory for dumps (default %(default)s)")
    p.add_argument("--makedumpfile", choices=MAKEDUMPFILE_MODES, default="auto",
                   help="auto: use it when installed (default); always: fail without it; never: our sparse copy")
    p.add_argument("--dump-level", type=int, default=DEFAULT_DUMP_LEVEL, metavar="N",
                   help="makedumpfile -d bitmask of pages to drop (default %(default)s)")
    p.add_argument("--keep", type=int, default=None, metavar="N", help="keep only the N newest complete dumps")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = sub.add_parser("dmesg", help="print the kernel log of a crash dump")
    p.add_argument("--vmcore", default=DEFAULT_VMCORE, metavar="PATH", help="crash dump to read (default %(default)s)")


def run_command(args, out):
    """Run ``save-vmcore`` or ``dmesg`` for the CLI; returns the report dict (also written to ``out``)."""
    # pylint: disable=import-outside-toplevel  # only the capture kernel's commands need them
    from ..arch import vmcore_memory
    from . import printk as _printk
    from .save import save_vmcore
    if args.command == "dmesg":
        report = _printk.kernel_log(args.vmcore, vmcore_memory)
        out.write(report["dmesg"])
        return report
    report = save_vmcore(args.vmcore, args.dest, makedumpfile=args.makedumpfile, dump_level=args.dump_level, keep=args.keep)
    if args.json:
        out.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        for key in sorted(report):
            out.write("%s: %s\n" % (key, report[key]))
    return report
