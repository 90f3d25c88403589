# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host-side command line for the loader (stdlib only, Python 3.8+).

    python3 -m <package>.cli plan|load|unload|exec|status|save-vmcore|dmesg [options]

``plan`` needs no root: it prints where every segment would go.  ``load --dry-run`` does every
step, hashing included, except the syscall.  Both can write every segment's bytes into a directory
(``--save-segments DIR``) to open the device tree with dtc or compare two plans.  ``exec`` jumps into the loaded kernel at once, like
``kexec -e`` (file systems are synced, services are *not* stopped: prefer ``systemctl kexec``).
``load --crash`` loads the capture kernel (see crash/ and arch/<arch>/crash.py); ``save-vmcore`` and
``dmesg`` run in that capture kernel after a panic (see dump/).
Errors a user can cause print one message on stderr and exit 1; usage errors exit 2.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import sys

from . import arch as _arch
from . import cmdline as _cmdline
from . import loader as _loader
from . import syscalls as _sc
from .dump import commands as _capture
from .errors import KexecError
from .request import METHODS, Request

PROG = "fleetboot-kexec"


def _hex(n):
    return "-" if n is None else "%#x" % n


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--sysroot", default="/", metavar="DIR",
                        help="root of the host to read (a recorded tree for tests); default /")
    common.add_argument("--json", action="store_true", help="print the result as JSON")

    image = argparse.ArgumentParser(add_help=False)
    image.add_argument("--kernel", required=True, metavar="FILE", help="kernel image (x86: bzImage; arm64: Image, Image.gz or EFI zboot)")
    image.add_argument("--initrd", metavar="FILE", help="initial ramdisk")
    image.add_argument("--append", default="", metavar="CMDLINE",
                       help="kernel command line (added after --reuse-cmdline's)")
    image.add_argument("--reuse-cmdline", action="store_true",
                       help="start from the running kernel's /proc/cmdline, minus BOOT_IMAGE= and "
                            "crash-only options (elfcorehdr=; crashkernel= too for --crash)")
    image.add_argument("--method", choices=METHODS, default="auto",
                       help="classic = kexec_load, file = kexec_file_load, auto picks (default)")
    image.add_argument("--save-segments", metavar="DIR", default=None,
                       help="plan and load --dry-run: write every segment's bytes into DIR, one file each "
                            "(NN-<what>.bin, a device tree as .dtb: open it with dtc -I dtb; compare two plans "
                            "with cmp or diff), and name the file in the report")

    kind = argparse.ArgumentParser(add_help=False)
    kind.add_argument("--crash", action="store_true", help="the crash (kdump) kernel, not the normal one")

    capture = argparse.ArgumentParser(add_help=False)
    capture.add_argument("--capture-options", metavar="OPTIONS", default=None,
                         help="added to a crash kernel's command line unless already there (default: "
                              "the architecture's, %r on x86_64; '' for none)" % _arch.X86_64.capture_options)

    ap = argparse.ArgumentParser(prog=PROG, description="Userspace kexec loader of fleetboot.kexec.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("plan", parents=[common, image, kind, capture],
                   help="print the load plan (no root needed, nothing is loaded)")
    p = sub.add_parser("load", parents=[common, image, kind, capture], help="load a kernel to exec later")
    p.add_argument("--dry-run", action="store_true",
                   help="every step (planning, purgatory, hashing) except the syscall")
    p = sub.add_parser("unload", parents=[common, kind], help="unload the loaded kernel")
    p.add_argument("--method", choices=METHODS, default="auto")
    sub.add_parser("exec", parents=[common], help="jump into the loaded kernel now (like kexec -e)")
    sub.add_parser("status", parents=[common], help="what is loaded, lockdown, crash region, method")
    _capture.add_parsers(sub)  # save-vmcore, dmesg: run in the capture kernel
    return ap


def request_from_args(args, host):
    cmdline = args.append
    kind = "crash" if args.crash else "normal"
    if args.reuse_cmdline:
        current = getattr(host, "cmdline", None)
        if current is None:
            raise KexecError("--reuse-cmdline: cannot read proc/cmdline under %s" % args.sysroot)
        cmdline = _cmdline.join_cmdline(_cmdline.reuse_cmdline(current, kind), args.append)
    if kind == "crash":
        options = args.capture_options
        if options is None:
            options = _arch.for_host(host).capture_options
        cmdline = _cmdline.add_capture_options(cmdline, options)
    elif args.capture_options is not None:
        raise KexecError("--capture-options applies to crash kernels only; add --crash")
    return Request(args.kernel, initrd=args.initrd, cmdline=cmdline, kind=kind, method=args.method)


def _say(stream, text):
    """Write one line to the CLI's stream (this is a command, not an Ansible module)."""
    stream.write(text + "\n")


def _print_plan(report, out):
    dry = "  (dry run)" if report.get("dry_run") else ""
    _say(out, "method %s  kind %s  entry %s%s" % (report["method"], report["kind"],
                                                  _hex(report["entry"]), dry))
    _say(out, "cmdline %s" % report.get("cmdline", ""))
    _say(out, "  %-12s %-18s %-12s %-12s %s" % ("what", "mem", "memsz", "bufsz", "sha256"))
    for s in report["segments"]:
        _say(out, "  %-12s %-18s %-12s %-12s %s" % (s["what"], _hex(s["mem"]), _hex(s["memsz"]),
                                                    _hex(s["bufsz"]),
                                                    s["sha256"] or "(not hashed: the kernel reads the file)"))
    if any(s.get("file") for s in report["segments"]):
        _say(out, "segments written to %s" % os.path.dirname(report["segments"][0]["file"]))
    for w in report.get("warnings", ()):
        _say(out, "warning: %s" % w)
    if report.get("fallback_from"):
        _say(out, "note: kexec_file_load failed (%s); loaded with kexec_load"
             % report["fallback_from"]["error"])
    if report.get("test_corrupted_segment"):
        _say(out, "TEST HOOK: corrupted %s after digesting" % report["test_corrupted_segment"])


def _emit(args, report, out):
    if args.json:
        _say(out, json.dumps(report, indent=2, sort_keys=True))
    elif "segments" in report:
        _print_plan(report, out)
    else:
        for key in sorted(report):
            _say(out, "%s: %s" % (key, report[key]))


def run(args, syscalls=None, stages=None, environ=None, out=None):
    """Execute parsed ``args``; returns the report dict (also printed)."""
    out = out or sys.stdout
    if args.command in _capture.COMMANDS:  # no host to read: the crashed kernel is in /proc/vmcore
        return _capture.run_command(args, out)
    stages = stages or _loader.DEFAULT_STAGES
    host = stages.read_host(args.sysroot)
    arch = getattr(host, "arch", None)
    if args.command == "plan":
        with _loader.make_plan(request_from_args(args, host), host, stages=stages, environ=environ) as prep:
            report = prep.to_dict()
            if args.save_segments:
                prep.save_segments(args.save_segments, report)
    elif args.command == "status":
        report = _loader.status(host)
    else:
        if syscalls is None and not (args.command == "load" and args.dry_run):
            syscalls = _sc.default_syscalls(arch, host)
        if args.command == "load":
            syscalls = syscalls or _sc.FakeSyscalls(arch or "x86_64")  # dry run: never called
            report = _loader.load(request_from_args(args, host), syscalls, host, dry_run=args.dry_run,
                                  save_segments=args.save_segments,
                                  stages=stages, environ=environ)
        elif args.command == "unload":
            report = _loader.unload(syscalls, host, kind="crash" if args.crash else "normal",
                                    method=args.method)
        elif args.command == "exec":
            report = _loader.execute(syscalls, host)
        else:  # pragma: no cover - argparse restricts the choices
            raise KexecError("unknown command %r" % args.command)
    _emit(args, report, out)
    return report


def main(argv=None, syscalls=None, stages=None, environ=None, out=None, err=None):
    """Entry point: returns the exit status (0 ok, 1 KexecError, 2 usage, 3 loader bug)."""
    err = err or sys.stderr
    args = _parser().parse_args(argv)  # exits 2 on usage errors
    try:
        run(args, syscalls=syscalls, stages=stages, environ=environ, out=out)
    except KexecError as e:
        _say(err, "%s %s: %s" % (PROG, args.command, e))
        return 1
    except KeyboardInterrupt:
        _say(err, "%s %s: interrupted" % (PROG, args.command))
        return 130
    except Exception as e:  # a bug, not the user's doing: say so, keep the traceback optional
        _say(err, "%s %s: internal error, a bug in the loader (please report): %s: %s"
             % (PROG, args.command, type(e).__name__, e))
        if os.environ.get("FLEETBOOT_DEBUG"):
            import traceback  # pylint: disable=import-outside-toplevel  # only for a bug report
            traceback.print_exc(file=err)
        else:
            _say(err, "(set FLEETBOOT_DEBUG=1 for the traceback)")
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
