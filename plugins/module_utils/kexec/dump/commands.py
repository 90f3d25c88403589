# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The capture kernel's subcommands of the CLI (``save-vmcore``, ``dmesg``, ``dump-tools``).

Kept apart from save.py so that every other command (a load at each boot, a plan) builds its
parser without importing the dump writer and what it needs (subprocess, the vmcore reader).

Every save-vmcore run, successful or not, appends its report as one JSON line to
``<dest>/captures.log``: the journal of a capture boot is often gone after the reboot, and this
is where the host says where its last dump went (locally, or to the dump server) and why.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import sys
import time

from ..errors import KexecError
from . import DEFAULT_DEST, DEFAULT_DUMP_LEVEL, DEFAULT_VMCORE, MAKEDUMPFILE_MODES

COMMANDS = ("save-vmcore", "dmesg", "dump-tools")
#: Kept in sync with makedumpfile.COMPRESSIONS (not imported: the parser of every command is built here).
COMPRESSIONS = ("auto", "zstd", "lzo", "snappy", "zlib", "none")
CAPTURES_LOG = "captures.log"


def add_parsers(sub):
    """Add the ``save-vmcore``, ``dmesg`` and ``dump-tools`` subcommands to the CLI's subparsers."""
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--target", choices=("local", "ssh"), default="local",
                        help="ssh: send the dump to a dump server, saving it under --dest only when that fails")
    target.add_argument("--ssh", metavar="USER@SERVER", help="the dump server (--target ssh)")
    target.add_argument("--ssh-port", type=int, default=22, metavar="PORT")
    target.add_argument("--ssh-key", metavar="FILE", help="private key the server accepts for the receiver")
    target.add_argument("--ssh-known-hosts", metavar="FILE", help="the server's host keys (checked strictly)")
    target.add_argument("--ssh-wait", type=int, default=60, metavar="SECONDS",
                        help="save-vmcore: how long to keep trying to reach the server while the network comes up "
                             "(default %(default)s); dump-tools tries once")
    target.add_argument("--host-name", metavar="NAME",
                        help="this host's name in the server's dump directory (default: hostname)")
    p = sub.add_parser("save-vmcore", parents=[target], help="in the capture kernel: save /proc/vmcore and its kernel log")
    p.add_argument("--vmcore", default=DEFAULT_VMCORE, metavar="PATH", help="crash dump to save (default %(default)s)")
    p.add_argument("--dest", default=DEFAULT_DEST, metavar="DIR", help="directory for dumps (default %(default)s)")
    p.add_argument("--makedumpfile", choices=MAKEDUMPFILE_MODES, default="auto",
                   help="auto: use it when installed (default); always: fail without it; never: our sparse copy")
    p.add_argument("--dump-level", type=int, default=DEFAULT_DUMP_LEVEL, metavar="N",
                   help="makedumpfile -d bitmask of pages to drop (default %(default)s)")
    p.add_argument("--compression", choices=COMPRESSIONS, default="auto",
                   help="makedumpfile's compression; auto: zstd, else lzo, else zlib, as the installed one supports")
    p.add_argument("--keep", type=int, default=None, metavar="N", help="keep only the N newest complete dumps")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = sub.add_parser("dmesg", help="print the kernel log of a crash dump")
    p.add_argument("--vmcore", default=DEFAULT_VMCORE, metavar="PATH", help="crash dump to read (default %(default)s)")
    p = sub.add_parser("dump-tools", parents=[target],
                       help="what save-vmcore would use here: makedumpfile, its compression, the dump server's answer")
    p.add_argument("--compression", choices=COMPRESSIONS, default="auto")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _log(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _append_capture_log(dest, entry):
    """One JSON line in <dest>/captures.log; a failure to write it never fails the capture."""
    try:
        if not os.path.isdir(dest):
            os.makedirs(dest)
        with open(os.path.join(dest, CAPTURES_LOG), "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except (IOError, OSError) as err:
        _log("fleetboot-kdump: cannot append to %s: %s" % (os.path.join(dest, CAPTURES_LOG), err))


def _memory():
    """What the capture kernel has: MemTotal and MemAvailable in bytes (for sizing crashkernel=)."""
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, dummy, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable") and rest.split():
                    out[key] = int(rest.split()[0]) * 1024
    except (IOError, OSError, ValueError):
        pass
    return out


def _peak_rss():
    """Largest resident sizes, in bytes, of save-vmcore itself and of a program it ran (makedumpfile)."""
    try:
        import resource  # pylint: disable=import-outside-toplevel
        return {"self_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "children_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}
    except (ImportError, OSError):
        return {}


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except (IOError, OSError):
        return None


def _save(args):
    # pylint: disable=import-outside-toplevel  # only the capture kernel's commands need them
    from .save import save_vmcore
    if args.target == "local":
        return save_vmcore(args.vmcore, args.dest, makedumpfile=args.makedumpfile, dump_level=args.dump_level,
                           keep=args.keep, compression=args.compression)
    from .remote import save_remote
    return save_remote(_ssh_target(args, args.ssh_wait), args.vmcore, args.dest, makedumpfile=args.makedumpfile,
                       dump_level=args.dump_level, compression=args.compression, keep=args.keep, log=_log)


def _ssh_target(args, wait):
    from .remote import SshTarget  # pylint: disable=import-outside-toplevel
    if not args.ssh:
        raise KexecError("--target ssh needs --ssh USER@SERVER")
    user, dummy, server = args.ssh.rpartition("@")
    return SshTarget(server, user=user or "root", port=args.ssh_port, key=args.ssh_key,
                     known_hosts=args.ssh_known_hosts, host_name=args.host_name, wait=wait)


def _server_answer(args):
    """The dump server's answer to ``check`` (one attempt), or KexecError saying what failed."""
    from .remote import reach  # pylint: disable=import-outside-toplevel
    target = _ssh_target(args, 0)
    try:
        return reach(target)
    except RuntimeError as err:
        raise KexecError("the dump server %s does not take dumps from this host: %s; check the address and port, "
                         "the key in its authorized_keys and the host keys in %s"
                         % (target.describe(), err, target.known_hosts or "known_hosts"))


def dump_tools(compression="auto", which=None, run=None):
    """What save-vmcore would use on this host: {makedumpfile, version, compressions, compression}."""
    # pylint: disable=import-outside-toplevel
    import shutil
    import subprocess
    from . import makedumpfile as _mdf
    exe = (which or shutil.which)("makedumpfile")
    tool = _mdf.probe(exe, run or subprocess.run) if exe else None
    if tool is None:
        return {"makedumpfile": None, "version": None, "compressions": [], "compression": None,
                "note": "makedumpfile is not installed: save-vmcore writes a sparse copy of the whole vmcore"
                if not exe else "%s -v did not run: save-vmcore falls back to a sparse copy" % exe}
    name, flag, note = _mdf.choose_compression(tool["compressions"], compression)
    return {"makedumpfile": exe, "version": tool["version"], "compressions": tool["compressions"],
            "compression": name, "flag": flag, "note": note}


def run_command(args, out):
    """Run ``save-vmcore``, ``dmesg`` or ``dump-tools`` for the CLI; returns the report dict (also
    written to ``out``)."""
    # pylint: disable=import-outside-toplevel  # only the capture kernel's commands need them
    if args.command == "dmesg":
        from ..arch import vmcore_memory
        from . import printk as _printk
        report = _printk.kernel_log(args.vmcore, vmcore_memory)
        out.write(report["dmesg"])
        return report
    if args.command == "dump-tools":
        report = dump_tools(args.compression)
        report["target"] = args.target
        if args.target == "ssh":
            report["server"] = _server_answer(args)
    else:
        started = time.time()
        memory = _memory()
        try:
            report = _save(args)
        except KexecError as err:
            _append_capture_log(args.dest, {"time": round(started), "boot_id": _boot_id(), "error": str(err),
                                            "memory": memory})
            raise
        memory.update(_peak_rss())
        entry = dict(report, time=round(started), boot_id=_boot_id(), memory=memory)
        _append_capture_log(args.dest, entry)
    if args.json:
        out.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        for key in sorted(report):
            out.write("%s: %s\n" % (key, report[key]))
    return report
