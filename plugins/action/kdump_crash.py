# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleetboot.kexec.kdump_crash: crash a host on purpose and wait until its vmcore is saved.

The proof that kdump works is a dump written by a real crash, so the task only succeeds when the
host has been through all of it: the panic (it stops answering), the capture kernel (a new boot
with /proc/vmcore), the reboot that follows, and a normal boot (another boot_id, no /proc/vmcore)
with a new complete dump directory under `path`. The waiting and the connection handling are
kexec_reboot's: every answer comes from a fresh connection, with SSH keepalives, so a session
from before the panic is never mistaken for the host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import posixpath
import shlex

from ansible.module_utils.common.text.converters import to_text
from ansible.utils.display import Display

from ansible_collections.fleetboot.kexec.plugins.action.kexec_reboot import (
    ActionModule as KexecRebootAction,
    BOOT_ID_RE,
    JumpFailed,
)

display = Display()

MARK = "--fleetboot-kdump-crash--"
CRASH_LOADED = "/sys/kernel/kexec_crash_loaded"
CAPTURES_LOG = "captures.log"
# Seconds between the trigger command returning and the panic, so that its SSH session ends first.
SYSRQ_DELAY = 2
# A normal boot that answers without the new dump gets this long for it to appear (the capture
# kernel renames the directory before it reboots, so it is there at once or never).
DUMP_GRACE = 10

ARGUMENT_SPEC = dict(
    path=dict(type="str", default="/var/crash"),
    timeout=dict(type="int", default=900),
    connect_timeout=dict(type="int"),
)


def probe_command(path):
    """One round trip: boot_id, release, kexec_crash_loaded, whether /proc/vmcore exists, dump files,
    the number of captures.log lines and the last ones."""
    log = shlex.quote(posixpath.join(path, CAPTURES_LOG))
    return ("echo {m}; cat /proc/sys/kernel/random/boot_id; echo {m}; uname -r; echo {m}; "
            "cat {c} 2>/dev/null; echo {m}; test -e /proc/vmcore && echo vmcore; echo {m}; "
            "find {p} -mindepth 2 -maxdepth 2 -type f \\( -name vmcore -o -name dmesg.txt \\) "
            "-printf '%s %p\\n' 2>/dev/null; echo {m}; "
            "cat {l} 2>/dev/null | wc -l; tail -n 3 {l} 2>/dev/null; echo {m}").format(
                m=MARK, c=CRASH_LOADED, p=shlex.quote(path), l=log)


def parse_captures(text):
    """(number of lines in captures.log, [the last entries as dicts]) from the probe's section."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip().isdigit():
        return 0, []
    entries = []
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return int(lines[0].strip()), entries


def trigger_command():
    """Enable sysrq, sync, and panic in a detached child after SYSRQ_DELAY seconds."""
    crash = "sleep %d; echo c > /proc/sysrq-trigger" % SYSRQ_DELAY
    return ("/bin/sh -c %s" % shlex.quote(
        "echo 1 > /proc/sys/kernel/sysrq && sync && "
        "setsid -f /bin/sh -c %s </dev/null >/dev/null 2>&1 && echo triggered" % shlex.quote(crash)))


class Dump:
    """One dump directory: <path>/<name>/vmcore (and dmesg.txt)."""

    def __init__(self, directory):
        self.directory = directory
        self.vmcore_size = None
        self.dmesg = None

    @property
    def complete(self):
        return self.vmcore_size is not None and not self.directory.endswith(".incomplete")

    @property
    def vmcore(self):
        return posixpath.join(self.directory, "vmcore")


def parse_dumps(text):
    """{directory: Dump} from `find -printf '%s %p'` lines."""
    dumps = {}
    for line in text.splitlines():
        size, sep, path = line.strip().partition(" ")
        if not sep or not size.isdigit():
            continue
        directory, name = posixpath.split(path)
        dump = dumps.setdefault(directory, Dump(directory))
        if name == "vmcore":
            dump.vmcore_size = int(size)
        elif name == "dmesg.txt":
            dump.dmesg = path
    return dumps


class CrashProbe:
    """One answer from the host."""

    def __init__(self, boot_id, release, crash_loaded, vmcore, dumps, captures=0, last_captures=()):
        self.boot_id = boot_id
        self.release = release
        self.crash_loaded = crash_loaded
        self.vmcore = vmcore
        self.dumps = dumps
        self.captures = captures
        self.last_captures = list(last_captures)

    @classmethod
    def parse(cls, stdout):
        """A CrashProbe from probe_command()'s output, or None when it is not a whole, sane answer."""
        parts = to_text(stdout).split(MARK)
        if len(parts) != 8:
            return None
        boot_id, release, loaded, vmcore = [p.strip() for p in parts[1:5]]
        if not BOOT_ID_RE.match(boot_id) or not release:
            return None
        count, entries = parse_captures(parts[6])
        return cls(boot_id, release, loaded == "1", vmcore == "vmcore", parse_dumps(parts[5]), count, entries)

    def captures_since(self, before):
        """The captures.log entries written after ``before`` (a CrashProbe) was taken."""
        new = self.captures - before.captures
        if new <= 0:
            return []
        return self.last_captures[-min(new, len(self.last_captures)):]


class ActionModule(KexecRebootAction):
    """Reuses kexec_reboot's connection handling (_reset_connection, _tune_connection, clock seams)."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def _crash_probe(self, path):
        """A CrashProbe, or None when the host does not answer (any connection or command failure)."""
        try:
            res = self._low_level_execute_command(probe_command(path), sudoable=True)
        except Exception as e:  # pylint: disable=broad-except  # down hosts fail in many ways
            display.vvv("kdump_crash: no answer: %s" % to_text(e).strip().splitlines()[-1:])
            self._reset_connection()
            return None
        if res.get("rc") != 0:
            display.vvv("kdump_crash: probe exited %s: %s" % (res.get("rc"), to_text(res.get("stderr")).strip()))
            self._reset_connection()
            return None
        return CrashProbe.parse(res.get("stdout", ""))

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        if self._connection.transport == "local":
            return {"failed": True, "changed": False, "crashed": False,
                    "msg": "kdump_crash with the local connection would crash the control node; refusing"}
        result = super(KexecRebootAction, self).run(tmp, task_vars)  # ActionBase.run, not the reboot
        if result.get("skipped") or result.get("failed"):
            return result
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        del validation
        self._timeout = max(1, args["timeout"])
        result.update(changed=False, crashed=False)
        restore = self._tune_connection(args["connect_timeout"])
        try:
            return self._crash(args, result)
        except JumpFailed as e:
            result.update(e.facts)
            result.update(failed=True, msg=to_text(e))
            return result
        finally:
            restore()

    def _crash(self, args, result):
        path = args["path"]
        before = self._crash_probe(path)
        if before is None:
            raise JumpFailed("cannot read the host's boot_id before the crash: is it up and Linux?")
        old = set(d for d, dump in before.dumps.items() if dump.complete)
        result.update(old_boot_id=before.boot_id, release=before.release,
                      crash_loaded=before.crash_loaded, dumps_before=sorted(old))
        if before.vmcore:
            raise JumpFailed("the host runs a capture kernel (/proc/vmcore exists): wait until it has "
                             "saved the dump and rebooted")
        if not before.crash_loaded:
            msg = ("no crash kernel is loaded (%s is 0): a crash now would not boot a capture kernel, the "
                   "host would hang or reboot without a dump; load one first (the fleetboot.kexec.kdump "
                   "role, or fleetboot.kexec.kexec_load type=crash); the host was not crashed" % CRASH_LOADED)
            if not self._task.check_mode:
                raise JumpFailed(msg)
            # In check mode the role's load unit has not run: say what a real run needs.
            display.warning("kdump_crash: %s (in check mode nothing is loaded; a real run fails unless a "
                            "crash kernel is loaded by then)" % msg)
        if self._task.check_mode:
            result.update(changed=True, msg="would crash %s (boot %s) with sysrq-c and wait for a new vmcore "
                          "under %s" % (before.release, before.boot_id, path))
            return result

        trigger = self._low_level_execute_command(trigger_command(), sudoable=True)
        if trigger.get("rc") != 0 or "triggered" not in to_text(trigger.get("stdout")):
            raise JumpFailed("the crash could not be triggered (exit %s): %s"
                             % (trigger.get("rc"), (to_text(trigger.get("stderr")) or to_text(trigger.get("stdout"))).strip()))
        panic = self._now() + SYSRQ_DELAY
        result.update(changed=True, crashed=True)
        try:
            return self._wait_for_dump(path, before, old, panic, result)
        except JumpFailed as e:
            e.facts.update(elapsed=round(self._now() - panic, 1))
            raise

    @staticmethod
    def _warn_unloaded(probe):
        if not probe.crash_loaded:
            display.warning("kdump_crash: %s came back without a loaded crash kernel (%s is 0): "
                            "kdump is off until one is loaded (did this boot keep crashkernel=?)"
                            % (probe.boot_id, CRASH_LOADED))

    def _wait_for_dump(self, path, before, old, panic, result):
        deadline = panic + self._timeout
        went_away = capture = back = None
        while True:
            probe = self._crash_probe(path)
            now = self._now()
            if probe is None:
                went_away = went_away or now
            elif probe.boot_id == before.boot_id:
                if now > panic + 60:
                    raise JumpFailed("the host still answers with boot_id %s %d s after sysrq-c: it did not "
                                     "crash (is sysrq restricted, or /proc/sysrq-trigger missing?)"
                                     % (before.boot_id, now - panic), crashed=False)
            elif probe.vmcore:
                if capture is None:
                    capture = probe.boot_id
                    result.update(capture_boot_id=capture, capture_answered=round(now - panic, 1))
                    display.vv("kdump_crash: the capture kernel answers (boot %s)" % capture)
            else:
                back = back or now
                new = dict((d, dump) for d, dump in probe.dumps.items() if dump.complete and d not in old)
                captured = probe.captures_since(before)
                record = captured[-1] if captured else {}
                if record:
                    result.update(capture_record=record, target=record.get("target", "local"),
                                  remote_error=record.get("remote_error"))
                if record.get("target") == "ssh" and not record.get("error"):
                    result.update(new_boot_id=probe.boot_id, crash_loaded_after=probe.crash_loaded,
                                  vmcore=posixpath.join(record.get("path", ""), "vmcore"),
                                  vmcore_size=record.get("size"), dmesg=posixpath.join(record.get("path", ""), "dmesg.txt"),
                                  dump_dir=record.get("path"), dump_server=record.get("server"),
                                  elapsed=round(now - panic, 1), downtime=round(now - (went_away or panic), 1))
                    result["msg"] = ("crashed %s; the capture kernel sent %s (%s bytes) to %s; back on boot %s after "
                                     "%.1f s" % (before.release, result["vmcore"], record.get("size"), record.get("server"),
                                                 probe.boot_id, result["elapsed"]))
                    self._warn_unloaded(probe)
                    return result
                if record.get("error") and not new:
                    raise JumpFailed("the capture kernel could not save the dump: %s (%s)"
                                     % (record["error"], posixpath.join(path, CAPTURES_LOG)), new_boot_id=probe.boot_id)
                if new:
                    dump = new[sorted(new)[-1]]
                    result.update(new_boot_id=probe.boot_id, crash_loaded_after=probe.crash_loaded,
                                  vmcore=dump.vmcore, vmcore_size=dump.vmcore_size, dmesg=dump.dmesg,
                                  dump_dir=dump.directory, elapsed=round(now - panic, 1),
                                  downtime=round(now - (went_away or panic), 1))
                    result["msg"] = ("crashed %s; the capture kernel saved %s (%d bytes)%s; back on boot %s "
                                     "after %.1f s" % (before.release, dump.vmcore, dump.vmcore_size,
                                                       " locally (%s)" % record["remote_error"] if record.get("remote_error") else "",
                                                       probe.boot_id, result["elapsed"]))
                    if record.get("remote_error"):
                        display.warning("kdump_crash: the dump could not go to the dump server and was saved locally: %s"
                                        % record["remote_error"])
                    self._warn_unloaded(probe)
                    return result
                if now - back >= DUMP_GRACE:
                    partial = sorted(d for d, dump in probe.dumps.items() if d not in old and not dump.complete)
                    raise JumpFailed(
                        "the host came back on a normal boot (%s) but no new vmcore is under %s%s; %s; see the "
                        "capture boot's journal (journalctl -b -1 -u fleetboot-kdump-capture.service, if the "
                        "journal is persistent) and the console" % (
                            probe.boot_id, path,
                            " (incomplete: %s)" % ", ".join(partial) if partial else "",
                            "the capture kernel answered as boot %s" % capture if capture else
                            "no capture kernel was seen answering (the host may have rebooted through the "
                            "firmware without one)"),
                        new_boot_id=probe.boot_id)
            self._reset_connection()
            if now >= deadline:
                break
            self._sleep(min(self.POLL_INTERVAL, max(0.0, deadline - now)))
        if went_away is None:
            raise JumpFailed("the host never stopped answering after sysrq-c within %d s" % self._timeout)
        if capture:
            raise JumpFailed("the capture kernel answered (boot %s) but the host was not back on a normal boot "
                             "with a saved vmcore within %d s (timeout): the dump may still be being written; "
                             "check the console" % (capture, self._timeout))
        raise JumpFailed("the host crashed but did not answer again within %d s (timeout): the capture kernel "
                         "may have failed to boot; check the console" % self._timeout)
