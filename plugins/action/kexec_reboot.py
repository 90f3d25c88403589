# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of fleetboot.kexec.kexec_reboot: trigger the jump, wait for a new boot, verify.

Success is decided by one fact only: the host answers with a boot_id other than the one it had
before the trigger (ansible#78007: a host that still answers with its old boot_id has not gone
down yet, however long the reboot command claims to have run). Every answer is read on a fresh
connection, so a persistent SSH master from before the jump is never mistaken for the host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import time

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

MODULE = "fleetboot.kexec.kexec_reboot"
STATUS_FILE = "/run/fleetboot/kexec_reboot.json"
MARK = "--fleetboot-kexec-reboot--"
# One round trip reads everything we compare: boot_id, release, cmdline, kexec_loaded and what
# the host-side trigger wrote about itself.
PROBE_COMMAND = ("echo {m}; cat /proc/sys/kernel/random/boot_id; echo {m}; uname -r; echo {m}; "
                 "cat /proc/cmdline; echo {m}; cat /sys/kernel/kexec_loaded 2>/dev/null; echo {m}; "
                 "cat {s} 2>/dev/null; echo {m}").format(m=MARK, s=STATUS_FILE)
# A dead peer is noticed within 15 s instead of never.
SSH_KEEPALIVE = "-o ServerAliveInterval=5 -o ServerAliveCountMax=3"
BOOT_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

ARGUMENT_SPEC = dict(
    fallback=dict(type="str", default="fail", choices=["cold", "fail"]),
    method=dict(type="str", default="auto", choices=["auto", "cold"]),
    reboot_timeout=dict(type="int", default=600),
    connect_timeout=dict(type="int"),
    test_command=dict(type="str", default="whoami"),
    pre_reboot_delay=dict(type="int", default=0),
    post_reboot_delay=dict(type="int", default=0),
    expect_release=dict(type="str"),
    expect_cmdline=dict(type="list", elements="str"),
    msg=dict(type="str", default="Reboot initiated by Ansible"),
    reboot_command=dict(type="str"),
    boot_time_command=dict(type="str"),
    search_paths=dict(type="list", elements="str", default=["/sbin", "/bin", "/usr/sbin", "/usr/bin", "/usr/local/sbin"]),
)
# What the host-side module needs; the waiting and checking options stay on the controller.
MODULE_OPTIONS = ("fallback", "pre_reboot_delay", "msg", "reboot_command", "search_paths")


class Probe:
    """One answer from the host."""

    def __init__(self, boot_id, release, cmdline, kexec_loaded, status):
        self.boot_id = boot_id
        self.release = release
        self.cmdline = cmdline
        self.kexec_loaded = kexec_loaded
        self.status = status

    @classmethod
    def parse(cls, stdout):
        """A Probe from PROBE_COMMAND's output, or None when it is not a whole, sane answer."""
        parts = to_text(stdout).split(MARK)
        if len(parts) != 7:
            return None
        boot_id, release, cmdline, loaded, status = [p.strip() for p in parts[1:6]]
        if not BOOT_ID_RE.match(boot_id) or not release:
            return None
        try:
            status = json.loads(status) if status else None
        except ValueError:
            status = None
        return cls(boot_id, release, cmdline, loaded == "1", status if isinstance(status, dict) else None)


class JumpFailed(Exception):
    """The task fails with this message; `facts` are added to the result."""

    def __init__(self, msg, **facts):
        super(JumpFailed, self).__init__(msg)
        self.facts = facts


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    POLL_INTERVAL = 1.0

    # Seams for the unit tests: a fake clock and sleep make the waits instantaneous.
    def _now(self):
        return time.monotonic()

    def _sleep(self, seconds):
        time.sleep(seconds)

    # -- talking to the host ---------------------------------------------------------------------
    def _reset_connection(self):
        try:
            self._connection.reset()
        except Exception as e:  # pylint: disable=broad-except  # a host that is down may not reset
            display.debug("kexec_reboot: connection reset failed: %s" % to_text(e))

    def _probe(self):
        """A Probe, or None when the host does not answer (any connection or command failure)."""
        try:
            res = self._low_level_execute_command(PROBE_COMMAND, sudoable=True)
        except Exception as e:  # pylint: disable=broad-except  # down hosts fail in many ways
            display.vvv("kexec_reboot: no answer: %s" % to_text(e).strip().splitlines()[-1:])
            self._reset_connection()
            return None
        if res.get("rc") != 0:
            display.vvv("kexec_reboot: probe exited %s: %s" % (res.get("rc"), to_text(res.get("stderr")).strip()))
            self._reset_connection()
            return None
        return Probe.parse(res.get("stdout", ""))

    def _tune_connection(self, connect_timeout):
        """Set the connection options the wait needs; return a function that restores them.

        connect_timeout goes to the plugin's timeout option. The ssh plugin also gets SSH
        keepalives: a host that resets without closing its TCP connections (a cold reset, or
        QEMU's user network, which keeps the host side of a connection open) would otherwise
        leave ssh, and the task, waiting forever. The connection is reset so that the SSH master
        is rebuilt with them.
        """
        saved = []

        def set_option(option, value):
            try:
                old = self._connection.get_option(option)
                self._connection.set_option(option, value)
            except (AnsibleError, KeyError, AttributeError):
                return False
            saved.append((option, old))
            return True

        if connect_timeout:
            if not (set_option("timeout", connect_timeout) or set_option("connection_timeout", connect_timeout)):
                display.warning("kexec_reboot: the %s connection plugin does not let connect_timeout be set"
                                % self._connection.transport)
        try:
            extra = self._connection.get_option("ssh_extra_args") or ""
        except (AnsibleError, KeyError, AttributeError):
            extra = None
        if extra is not None and "serveralive" not in extra.lower():
            set_option("ssh_extra_args", (extra + " " + SSH_KEEPALIVE).strip())
        if saved:
            self._reset_connection()

        def restore():
            for option, old in reversed(saved):
                try:
                    self._connection.set_option(option, old)
                except (AnsibleError, KeyError, AttributeError):
                    pass
            if saved:
                self._reset_connection()
        return restore

    def _run_module(self, args, method, task_vars):
        module_args = dict((k, args[k]) for k in MODULE_OPTIONS if args.get(k) is not None)
        module_args["method"] = method
        if method == "cold":
            # The fallback's own reboot: no custom command, and the users were told already.
            module_args.pop("reboot_command", None)
            module_args["msg"] = ""
        try:
            return self._execute_module(module_name=MODULE, module_args=module_args,
                                        task_vars=task_vars)
        except AnsibleConnectionFailure as e:
            # The host may already be going down; the boot_id decides what happened.
            return {"unreachable": True, "msg": to_text(e)}

    # -- the wait ---------------------------------------------------------------------------------
    def _wait_for_new_boot(self, old_boot_id, deadline, refused):
        """Poll until the host answers with another boot_id; return (probe, last_old, first_new).

        `refused(status)` is called once per refusal when the host still runs the old boot and
        its trigger says the shutdown was refused; it starts a cold reboot (and the wait goes on)
        or raises JumpFailed.
        """
        last_old = self._now()
        went_away = None
        refused_handled = set()
        while True:
            probe = self._probe()
            now = self._now()
            if probe is None:
                went_away = went_away or now
            elif probe.boot_id != old_boot_id:
                return probe, last_old, now
            else:
                # Still the old boot: not down yet, whatever happened before. Drop the connection
                # so that the next answer comes from a fresh login, not a master from before.
                last_old, went_away = now, None
                status = probe.status or {}
                key = (status.get("state"), status.get("time"))
                if (status.get("boot_id") == old_boot_id and status.get("state") == "failed"
                        and key not in refused_handled):
                    refused_handled.add(key)
                    refused(status)
                self._reset_connection()
            if now >= deadline:
                break
            self._sleep(min(self.POLL_INTERVAL, max(0.0, deadline - now)))
        if went_away is None:
            raise JumpFailed("the host still answers with its old boot_id %s after %d s: it did not go "
                             "down (see its journal for the shutdown)" % (old_boot_id, self._timeout))
        raise JumpFailed("the host went down but did not answer with a new boot_id within %d s "
                         "(reboot_timeout): check its console" % self._timeout)

    def _boot_time(self, command):
        """(output, None) of boot_time_command, or (None, why it failed)."""
        try:
            res = self._low_level_execute_command(command, sudoable=True)
        except Exception as e:  # pylint: disable=broad-except  # down hosts fail in many ways
            self._reset_connection()
            return None, to_text(e).strip()
        out = to_text(res.get("stdout")).strip()
        if res.get("rc") != 0:
            return None, "exit %s: %s" % (res.get("rc"), (to_text(res.get("stderr")) or out).strip())
        if not out:
            return None, "it printed nothing"
        return out, None

    def _wait_for_new_boot_time(self, command, before, deadline):
        """Retry boot_time_command until it prints something other than `before`."""
        while True:
            now, why = self._boot_time(command)
            if now is not None and now != before:
                return now
            if now is not None:
                why = "it still prints %r, as before the reboot" % now
            if self._now() >= deadline:
                raise JumpFailed("the host answered with a new boot_id but boot_time_command %r did not "
                                 "show a new boot within %d s (reboot_timeout): %s"
                                 % (command, self._timeout, why), rebooted=True)
            self._sleep(self.POLL_INTERVAL)

    def _run_test_command(self, command, deadline):
        last = "it did not run"
        while True:
            try:
                res = self._low_level_execute_command(command, sudoable=True)
                if res.get("rc") == 0:
                    return
                last = "exit %s: %s" % (res.get("rc"), (to_text(res.get("stderr")) or to_text(res.get("stdout"))).strip())
            except Exception as e:  # pylint: disable=broad-except
                last = to_text(e).strip()
                self._reset_connection()
            if self._now() >= deadline:
                raise JumpFailed("the host came back but test_command %r did not succeed within %d s "
                                 "(reboot_timeout); last: %s" % (command, self._timeout, last))
            self._sleep(self.POLL_INTERVAL)

    @staticmethod
    def _check_expectations(args, probe):
        problems = []
        if args.get("expect_release") and probe.release != args["expect_release"]:
            problems.append("expected release %s, found %s" % (args["expect_release"], probe.release))
        words = probe.cmdline.split()
        missing = [item for item in args.get("expect_cmdline") or [] if item not in words]
        if missing:
            problems.append("expected %s in /proc/cmdline, found %r"
                            % (", ".join(missing), probe.cmdline))
        return problems

    # -- the task ---------------------------------------------------------------------------------
    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        if self._connection.transport == "local":
            return {"failed": True, "changed": False, "rebooted": False,
                    "msg": "kexec_reboot with the local connection would reboot the control node; "
                           "refusing"}
        result = super(ActionModule, self).run(tmp, task_vars)
        if result.get("skipped") or result.get("failed"):
            return result
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        del validation
        self._timeout = max(1, args["reboot_timeout"])
        result.update(changed=False, rebooted=False)

        restore = self._tune_connection(args["connect_timeout"])
        try:
            return self._jump(args, task_vars or {}, result)
        except JumpFailed as e:
            result.update(e.facts)
            result.update(failed=True, msg=to_text(e))
            return result
        finally:
            restore()

    def _jump(self, args, task_vars, result):
        before = self._probe()
        if before is None:
            raise JumpFailed("cannot read the host's boot_id before the reboot: is it up and Linux?")
        result.update(old_boot_id=before.boot_id, old_release=before.release,
                      kexec_loaded=before.kexec_loaded)
        boot_time_before = None
        if args["boot_time_command"]:
            boot_time_before, why = self._boot_time(args["boot_time_command"])
            if boot_time_before is None:
                raise JumpFailed("boot_time_command %r failed before the reboot (%s): fix the command; "
                                 "the host was not rebooted" % (args["boot_time_command"], why))

        mod = self._run_module(args, args["method"], task_vars)
        for key in ("init", "command", "method", "reason", "announced", "warnings", "deprecations"):
            if key in mod:
                result[key] = mod[key]
        if mod.get("failed") and not mod.get("unreachable"):
            return dict(result, failed=True, msg=mod.get("msg", "kexec_reboot failed on the host"))
        if self._task.check_mode:
            return dict(result, changed=True, msg=mod.get("msg"))
        if mod.get("unreachable"):
            display.warning("kexec_reboot: the connection dropped while the reboot was triggered (%s); "
                            "waiting for a new boot_id" % mod.get("msg"))
            result.setdefault("method", "kexec" if before.kexec_loaded else "cold")

        start = self._now()
        result["changed"] = True
        deadline = start + max(0, args["pre_reboot_delay"]) + self._timeout

        def refused(status):
            msg = status.get("msg") or "no message"
            if result.get("method") in ("kexec", "custom") and args["fallback"] == "cold":
                display.warning("kexec_reboot: the jump was refused (%s); rebooting cold" % msg)
                cold = self._run_module(args, "cold", task_vars)
                if cold.get("failed") and not cold.get("unreachable"):
                    raise JumpFailed("the jump was refused (%s) and the cold fallback failed too: %s"
                                     % (msg, cold.get("msg")))
                result.update(method="cold", reason="the jump was refused: %s" % msg)
                for key in ("command", "init"):
                    if key in cold:
                        result[key] = cold[key]
                return
            raise JumpFailed("the %s reboot was refused on the host: %s; it keeps running boot %s"
                             % (result.get("method", "kexec"), msg, before.boot_id), changed=False)

        try:
            after, last_old, first_new = self._wait_for_new_boot(before.boot_id, deadline, refused)
        except JumpFailed as e:
            e.facts.update(elapsed=round(self._now() - start, 1))
            raise
        result.update(rebooted=True, new_boot_id=after.boot_id, new_release=after.release,
                      new_cmdline=after.cmdline, downtime=round(first_new - last_old, 1))
        try:
            if args["boot_time_command"]:
                self._wait_for_new_boot_time(args["boot_time_command"], boot_time_before, deadline)
            if args["post_reboot_delay"] > 0:
                self._sleep(args["post_reboot_delay"])
            # As in ansible.builtin.reboot, the test command gets a reboot_timeout of its own.
            self._run_test_command(args["test_command"], self._now() + self._timeout)
        finally:
            result["elapsed"] = round(self._now() - start, 1)
        problems = self._check_expectations(args, after)
        if problems:
            raise JumpFailed("the host rebooted (boot_id %s -> %s, by %s) but %s"
                             % (before.boot_id, after.boot_id, result.get("method"), "; ".join(problems)))
        result["msg"] = "rebooted (%s): %s -> %s" % (result.get("method"), before.release, after.release)
        return result
