"""kexec_reboot without a host: the action plugin against a scripted fake host and a fake clock,
and the module's host-side helpers against fake libc / runner / directories."""

import ctypes
import errno
import json
import os

import pytest

from ansible.errors import AnsibleConnectionFailure

from ansible_collections.fleetboot.kexec.plugins.action import kexec_reboot as action
from ansible_collections.fleetboot.kexec.plugins.modules import kexec_reboot as module

OLD = "11111111-1111-4111-8111-111111111111"
NEW = "22222222-2222-4222-8222-222222222222"
OLD_RELEASE = "6.1.0-54-amd64"
NEW_RELEASE = "6.1.0-56-amd64"
CMDLINE = "console=ttyS0 root=/dev/vda rw"
RTT = 0.5  # seconds of fake time each command costs


class Up:
    def __init__(self, boot_id, release, cmdline=CMDLINE, loaded=True, status=None):
        self.boot_id, self.release, self.cmdline = boot_id, release, cmdline
        self.loaded, self.status = loaded, status


DOWN = None


class FakeHost:
    """The host over time: a list of (until fake time, state); the last state lasts forever."""

    def __init__(self, timeline, test_rc=0):
        self.timeline = timeline
        self.test_rc = test_rc
        self.clock = 0.0
        self.probes = []  # (time, boot_id or None)
        self.commands = []

    def state(self):
        for until, state in self.timeline:
            if self.clock < until:
                return state
        return self.timeline[-1][1]

    def execute(self, cmd, sudoable=True, **kwargs):
        del sudoable, kwargs
        self.clock += RTT
        state = self.state()
        self.commands.append(cmd)
        if state is DOWN:
            self.probes.append((self.clock, None))
            raise AnsibleConnectionFailure("ssh: connect to host 127.0.0.1 port 2222: Connection timed out")
        if cmd == action.PROBE_COMMAND:
            self.probes.append((self.clock, state.boot_id))
            status = json.dumps(state.status) if state.status else ""
            out = action.MARK + "\n" + "\n".join([
                state.boot_id, action.MARK, state.release, action.MARK, state.cmdline, action.MARK,
                "1" if state.loaded else "0", action.MARK, status, action.MARK]) + "\n"
            return {"rc": 0, "stdout": out, "stderr": ""}
        return {"rc": self.test_rc, "stdout": "root\n" if self.test_rc == 0 else "",
                "stderr": "" if self.test_rc == 0 else "test failed"}


class FakeShell:
    tmpdir = None


class FakeConnection:
    def __init__(self, transport="ssh"):
        self.transport = transport
        self._shell = FakeShell()
        self.options = {"timeout": 10, "ssh_extra_args": ""}
        self.resets = 0

    def reset(self):
        self.resets += 1

    def get_option(self, name):
        return self.options[name]

    def set_option(self, name, value):
        self.options[name] = value


class FakeTask:
    def __init__(self, args, check_mode=False):
        self.args = args
        self.check_mode = check_mode
        self.async_val = 0
        self.action = "fleetboot.kexec.kexec_reboot"


def default_module_result(host, args):
    """What the host-side module says for `args` given the host's state at trigger time."""
    state = host.state()
    method = args["method"]
    if method == "auto" and not state.loaded:
        if args["fallback"] == "fail":
            return {"failed": True, "msg": "no kexec image is loaded (/sys/kernel/kexec_loaded is 0): "
                                           "load one first", "triggered": False}
        return {"changed": True, "method": "cold", "init": "systemd",
                "reason": "no kexec image is loaded (/sys/kernel/kexec_loaded is 0)",
                "command": ["SYSTEMCTL_SKIP_AUTO_KEXEC=1 systemctl --no-block reboot"]}
    if method == "cold":
        return {"changed": True, "method": "cold", "init": "systemd",
                "reason": "a cold reboot was requested (method: cold)",
                "command": ["SYSTEMCTL_SKIP_AUTO_KEXEC=1 systemctl --no-block reboot"]}
    return {"changed": True, "method": "kexec", "init": "systemd",
            "command": ["systemctl --no-block kexec"]}


def make_action(host, args, check_mode=False, transport="ssh", module_result=None):
    plugin = action.ActionModule(FakeTask(args, check_mode), FakeConnection(transport), None, None, None, None)
    plugin.module_calls = []

    def now():
        return host.clock

    def sleep(seconds):
        host.clock += seconds

    def execute_module(module_name=None, module_args=None, task_vars=None, **kwargs):
        del task_vars, kwargs
        assert module_name == action.MODULE
        plugin.module_calls.append((host.clock, dict(module_args), check_mode))
        host.clock += RTT
        full = dict((k, v["default"]) for k, v in action.ARGUMENT_SPEC.items() if "default" in v)
        full.update(module_args)
        return (module_result or default_module_result)(host, full)

    plugin._now = now
    plugin._sleep = sleep
    plugin._low_level_execute_command = host.execute
    plugin._execute_module = execute_module
    return plugin


def run(host, check_mode=False, transport="ssh", module_result=None, **args):
    plugin = make_action(host, args, check_mode, transport, module_result)
    return plugin, plugin.run(task_vars={})


def kexec_timeline(old_for=5.0, down_for=10.0, release=NEW_RELEASE, cmdline=CMDLINE):
    """Old boot answers until t=old_for, then the host is down for down_for, then the new boot."""
    return [(old_for, Up(OLD, OLD_RELEASE)), (old_for + down_for, DOWN),
            (float("inf"), Up(NEW, release, cmdline, loaded=False))]


# -- the wait ----------------------------------------------------------------------------------

def test_success_only_after_a_new_boot_id_answers():
    host = FakeHost(kexec_timeline(old_for=5, down_for=10))
    plugin, res = run(host, expect_release=NEW_RELEASE)
    assert not res.get("failed"), res
    assert res["rebooted"] is True and res["changed"] is True
    assert res["method"] == "kexec"
    assert (res["old_boot_id"], res["new_boot_id"]) == (OLD, NEW)
    assert (res["old_release"], res["new_release"]) == (OLD_RELEASE, NEW_RELEASE)
    assert res["new_cmdline"] == CMDLINE
    # The old boot kept answering for a while after the trigger: all of that was "not yet down".
    olds = [t for t, b in host.probes if b == OLD]
    assert len(olds) >= 3
    first_new = min(t for t, b in host.probes if b == NEW)
    assert res["downtime"] == pytest.approx(first_new - max(olds), abs=0.01)
    assert 10 <= res["downtime"] <= 12
    assert res["elapsed"] >= res["downtime"]
    assert "whoami" in host.commands
    assert host.commands.index("whoami") > host.commands.index(action.PROBE_COMMAND)
    assert plugin.module_calls[0][1] == {"fallback": "fail", "method": "auto", "pre_reboot_delay": 0}
    # Each answer from the old boot drops the connection: no persistent master from before the jump.
    assert plugin._connection.resets >= len(olds) - 1


def test_new_boot_id_without_a_failed_probe_in_between_is_still_a_reboot():
    # A fast kexec can come back between two polls; the boot_id alone proves the reboot.
    host = FakeHost([(3, Up(OLD, OLD_RELEASE)), (float("inf"), Up(NEW, NEW_RELEASE))])
    plugin, res = run(host)
    assert not res.get("failed"), res
    assert res["new_boot_id"] == NEW and res["rebooted"]


def test_never_succeeds_while_the_old_boot_id_answers():
    host = FakeHost([(float("inf"), Up(OLD, OLD_RELEASE))])
    plugin, res = run(host, reboot_timeout=30)
    assert res["failed"] and res["rebooted"] is False
    assert "still answers with its old boot_id %s after 30 s" % OLD in res["msg"]
    assert "new_boot_id" not in res
    assert host.clock >= 30
    assert {b for t, b in host.probes} == {OLD}


def test_host_that_goes_down_and_never_comes_back_times_out_clearly():
    host = FakeHost([(2, Up(OLD, OLD_RELEASE)), (float("inf"), DOWN)])
    plugin, res = run(host, reboot_timeout=40)
    assert res["failed"] and res["rebooted"] is False
    assert "went down but did not answer with a new boot_id within 40 s" in res["msg"]
    assert res["elapsed"] >= 40
    assert plugin._connection.resets > 5  # every failed attempt starts from a fresh connection


def test_test_command_must_pass_before_success():
    host = FakeHost(kexec_timeline(), test_rc=1)
    plugin, res = run(host, reboot_timeout=60, test_command="systemctl is-system-running")
    assert res["failed"] and res["rebooted"] is True
    assert "test_command 'systemctl is-system-running' did not succeed within 60 s" in res["msg"]
    assert "test failed" in res["msg"]


def test_expect_release_mismatch_fails_naming_expected_and_found():
    host = FakeHost(kexec_timeline(release=OLD_RELEASE))
    plugin, res = run(host, expect_release=NEW_RELEASE)
    assert res["failed"] and res["rebooted"] is True
    assert "expected release %s, found %s" % (NEW_RELEASE, OLD_RELEASE) in res["msg"]
    assert res["new_boot_id"] == NEW and res["new_release"] == OLD_RELEASE


def test_expect_cmdline_items_must_be_whole_words():
    host = FakeHost(kexec_timeline(cmdline="console=ttyS0 root=/dev/vda rw quiet=1"))
    plugin, res = run(host, expect_cmdline=["console=ttyS0", "quiet", "mitigations=off"])
    assert res["failed"]
    assert "expected quiet, mitigations=off in /proc/cmdline" in res["msg"]
    assert "quiet=1" in res["msg"]

    host = FakeHost(kexec_timeline())
    plugin, res = run(host, expect_cmdline=["console=ttyS0", "rw"], expect_release=NEW_RELEASE)
    assert not res.get("failed"), res


def test_connection_failures_count_as_down_and_post_reboot_delay_waits():
    host = FakeHost(kexec_timeline(old_for=3, down_for=20))
    plugin, res = run(host, post_reboot_delay=7)
    assert not res.get("failed"), res
    first_new = min(t for t, b in host.probes if b == NEW)
    whoami_at = host.clock  # the last command was whoami
    assert whoami_at - first_new >= 7
    assert None in [b for t, b in host.probes]


def test_connect_timeout_is_set_for_the_task_and_restored():
    host = FakeHost(kexec_timeline())
    plugin = make_action(host, {"connect_timeout": 3})
    seen = []
    orig = host.execute

    def execute(cmd, **kw):
        seen.append(plugin._connection.options["timeout"])
        return orig(cmd, **kw)

    plugin._low_level_execute_command = execute
    res = plugin.run(task_vars={})
    assert not res.get("failed"), res
    assert set(seen) == {3}
    assert plugin._connection.options["timeout"] == 10


def test_ssh_keepalives_bound_every_command_and_are_restored():
    host = FakeHost(kexec_timeline())
    plugin = make_action(host, {})
    plugin._connection.options["ssh_extra_args"] = "-o Foo=bar"
    seen = []
    orig = host.execute

    def execute(cmd, **kw):
        seen.append(plugin._connection.options["ssh_extra_args"])
        return orig(cmd, **kw)

    plugin._low_level_execute_command = execute
    res = plugin.run(task_vars={})
    assert not res.get("failed"), res
    assert set(seen) == {"-o Foo=bar " + action.SSH_KEEPALIVE}
    assert plugin._connection.options["ssh_extra_args"] == "-o Foo=bar"


# -- module results, fallback ------------------------------------------------------------------

def test_no_image_with_fallback_fail_fails_without_rebooting_or_waiting():
    host = FakeHost([(float("inf"), Up(OLD, OLD_RELEASE, loaded=False))])
    plugin, res = run(host)
    assert res["failed"] and res["rebooted"] is False and res["changed"] is False
    assert "no kexec image is loaded" in res["msg"]
    assert res["old_boot_id"] == OLD and res["kexec_loaded"] is False
    assert len(host.probes) == 1  # the probe before the module; no waiting
    assert len(plugin.module_calls) == 1


def test_no_image_with_fallback_cold_reboots_cold_and_says_why():
    host = FakeHost([(4, Up(OLD, OLD_RELEASE, loaded=False)), (30, DOWN),
                     (float("inf"), Up(NEW, OLD_RELEASE, loaded=False))])
    plugin, res = run(host, fallback="cold")
    assert not res.get("failed"), res
    assert res["method"] == "cold"
    assert "no kexec image is loaded" in res["reason"]
    assert res["new_boot_id"] == NEW
    assert plugin.module_calls[0][1]["fallback"] == "cold"


def test_refused_jump_with_fallback_cold_runs_the_cold_reboot():
    failed = {"boot_id": OLD, "state": "failed", "method": "kexec", "time": 3.0,
              "msg": "systemctl kexec failed (exit 1): Access denied"}
    host = FakeHost([(3, Up(OLD, OLD_RELEASE)), (float("inf"), Up(OLD, OLD_RELEASE, status=failed))])

    def module_result(h, args):
        if args["method"] == "cold":  # after the fallback the host goes down and comes back
            h.timeline = [(h.clock + 5, Up(OLD, OLD_RELEASE)), (h.clock + 20, DOWN),
                          (float("inf"), Up(NEW, OLD_RELEASE, loaded=False))]
        return default_module_result(h, args)

    plugin, res = run(host, fallback="cold", module_result=module_result)
    assert not res.get("failed"), res
    assert [c[1]["method"] for c in plugin.module_calls] == ["auto", "cold"]
    assert res["method"] == "cold"
    assert res["reason"] == "the jump was refused: systemctl kexec failed (exit 1): Access denied"
    assert res["new_boot_id"] == NEW


def test_refused_jump_with_fallback_fail_fails_at_once():
    failed = {"boot_id": OLD, "state": "failed", "method": "kexec", "time": 3.0,
              "msg": "systemctl kexec failed (exit 1): Access denied"}
    host = FakeHost([(3, Up(OLD, OLD_RELEASE)), (float("inf"), Up(OLD, OLD_RELEASE, status=failed))])
    plugin, res = run(host, reboot_timeout=600)
    assert res["failed"] and res["rebooted"] is False
    assert "kexec reboot was refused on the host: systemctl kexec failed" in res["msg"]
    assert "keeps running boot %s" % OLD in res["msg"]
    assert res["changed"] is False
    assert host.clock < 60
    assert len(plugin.module_calls) == 1


def test_stale_failure_status_from_an_earlier_boot_is_ignored():
    stale = {"boot_id": "33333333-3333-4333-8333-333333333333", "state": "failed", "time": 1.0,
             "msg": "old news"}
    host = FakeHost([(5, Up(OLD, OLD_RELEASE, status=stale)), (15, DOWN),
                     (float("inf"), Up(NEW, NEW_RELEASE))])
    plugin, res = run(host)
    assert not res.get("failed"), res


def test_check_mode_reports_and_touches_nothing():
    host = FakeHost([(float("inf"), Up(OLD, OLD_RELEASE))])

    def module_result(h, args):
        return {"changed": True, "method": "kexec", "init": "systemd", "msg": "would reboot by kexec",
                "command": ["systemctl --no-block kexec"]}

    plugin, res = run(host, check_mode=True, module_result=module_result)
    assert not res.get("failed"), res
    assert res["changed"] is True and res["rebooted"] is False
    assert res["method"] == "kexec" and res["old_boot_id"] == OLD
    assert plugin.module_calls[0][2] is True  # the module ran in check mode
    assert len(host.probes) == 1 and "whoami" not in host.commands


def test_local_connection_is_refused():
    host = FakeHost([(float("inf"), Up(OLD, OLD_RELEASE))])
    plugin, res = run(host, transport="local")
    assert res["failed"] and "would reboot the control node" in res["msg"]
    assert plugin.module_calls == [] and host.commands == []


def test_unreadable_host_before_the_jump_fails_without_triggering():
    host = FakeHost([(float("inf"), DOWN)])
    plugin, res = run(host)
    assert res["failed"] and "cannot read the host's boot_id before the reboot" in res["msg"]
    assert plugin.module_calls == []


def test_bad_option_fails():
    host = FakeHost([(float("inf"), Up(OLD, OLD_RELEASE))])
    with pytest.raises(Exception) as info:
        run(host, fallback="warm")
    assert "fallback" in str(info.value)


def test_probe_parse_rejects_partial_answers():
    good = action.MARK + "\n%s\n%s\n6.1\n%s\nro\n%s\n1\n%s\n\n%s\n" % ((OLD,) + (action.MARK,) * 5)
    p = action.Probe.parse(good)
    assert (p.boot_id, p.release, p.cmdline, p.kexec_loaded, p.status) == (OLD, "6.1", "ro", True, None)
    assert action.Probe.parse(good.rsplit(action.MARK, 1)[0]) is None
    assert action.Probe.parse(good.replace(OLD, "")) is None


# -- module (host side) helpers ------------------------------------------------------------------

def test_choose_method():
    assert module.choose_method("auto", "fail", True) == ("kexec", None)
    assert module.choose_method("auto", "cold", False)[0] == "cold"
    assert "kexec_loaded is 0" in module.choose_method("auto", "cold", False)[1]
    assert module.choose_method("cold", "fail", True)[0] == "cold"
    with pytest.raises(module.RebootError) as info:
        module.choose_method("auto", "fail", False)
    assert "fallback: cold" in str(info.value) and "not rebooted" in str(info.value)


def test_host_state_reads_a_recorded_tree(tmp_path):
    for path, text in (("proc/sys/kernel/random/boot_id", OLD + "\n"), ("proc/cmdline", CMDLINE + "\n"),
                       ("sys/kernel/kexec_loaded", "1\n")):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    state = module.host_state(str(tmp_path))
    assert state["boot_id"] == OLD and state["cmdline"] == CMDLINE and state["kexec_loaded"] is True
    (tmp_path / "sys/kernel/kexec_loaded").write_text("0\n")
    assert module.host_state(str(tmp_path))["kexec_loaded"] is False


def test_rc6_scripts_skip_the_reboot_script(tmp_path):
    for name in ("K01sendsigs", "K05umountfs", "K09reboot", "K02ssh", "README", "S10halt"):
        (tmp_path / name).write_text("")
    names = [os.path.basename(s) for s in module.rc6_scripts(str(tmp_path))]
    assert names == ["K01sendsigs", "K02ssh", "K05umountfs"]
    steps = module.shutdown_steps("sysv", "kexec", str(tmp_path))
    assert steps[-2:] == ["sync", "reboot(LINUX_REBOOT_CMD_KEXEC)"]
    assert module.shutdown_steps("systemd", "cold") == ["SYSTEMCTL_SKIP_AUTO_KEXEC=1 systemctl --no-block reboot"]


class FakeLibc:
    def __init__(self, results):
        self.results = list(results)  # errno per call, 0 = success
        self.calls = []

    def syscall(self, nr, *args):
        self.calls.append((nr.value, [getattr(a, "value", a) for a in args]))
        err = self.results.pop(0)
        ctypes.set_errno(err)
        return 0 if err == 0 else -1


def test_unload_prefers_kexec_file_load_unload():
    libc = FakeLibc([0])
    assert module.unload_kexec_image(libc, "x86_64") == "kexec_file_load"
    assert libc.calls == [(320, [-1, -1, 0, None, module.KEXEC_FILE_UNLOAD])]


def test_unload_falls_back_to_kexec_load_with_no_segments():
    libc = FakeLibc([errno.ENOSYS, 0])
    assert module.unload_kexec_image(libc, "x86_64") == "kexec_load"
    assert libc.calls[1] == (246, [0, 0, None, 0])


def test_unload_failure_refuses_the_cold_reboot():
    libc = FakeLibc([errno.EPERM, errno.EPERM])
    with pytest.raises(module.RebootError) as info:
        module.unload_kexec_image(libc, "x86_64")
    assert "cannot unload" in str(info.value) and "not rebooted" in str(info.value)


class Proc:
    def __init__(self, rc, out=b""):
        self.returncode, self.stdout = rc, out


def test_systemd_cold_reboot_skips_auto_kexec_and_reports_refusals():
    calls = []

    def runner(argv, **kw):
        calls.append((argv, kw.get("env", {}).get("SYSTEMCTL_SKIP_AUTO_KEXEC")))
        return Proc(0)

    assert module.run_shutdown("systemd", "cold", OLD, runner=runner) is None
    assert calls == [(["systemctl", "--no-block", "reboot"], "1")]
    calls[:] = []
    assert module.run_shutdown("systemd", "kexec", OLD, runner=runner) is None
    assert calls[0][0] == ["systemctl", "--no-block", "kexec"] and calls[0][1] != "1"

    def refusing(argv, **kw):
        return Proc(1, b"Failed to start kexec.target: Access denied\n")

    msg = module.run_shutdown("systemd", "kexec", OLD, runner=refusing)
    assert msg == "systemctl kexec failed (exit 1): Failed to start kexec.target: Access denied"


def test_status_file_round_trip(tmp_path):
    path = str(tmp_path / "run" / "kexec_reboot.json")
    module.write_status(OLD, "failed", "kexec", "nope", path=path)
    with open(path) as f:
        status = json.load(f)
    assert status["boot_id"] == OLD and status["state"] == "failed" and status["msg"] == "nope"
