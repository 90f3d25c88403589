"""kexec_reboot without a host: the action plugin against a scripted fake host and a fake clock,
and the module's host-side helpers against fake libc / runner / directories."""

import errno
import json
import os

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as sc

from ansible.errors import AnsibleConnectionFailure

from ansible_collections.fleetboot.kexec.tests.unit.plugins.action.fakes import FakeConnection, FakeTask
from ansible_collections.fleetboot.kexec.plugins.action import kexec_reboot as action
from ansible_collections.fleetboot.kexec.plugins.modules import kexec_reboot as module

OLD = "11111111-1111-4111-8111-111111111111"
NEW = "22222222-2222-4222-8222-222222222222"
OLD_RELEASE = "6.1.0-54-amd64"
NEW_RELEASE = "6.1.0-56-amd64"
CMDLINE = "console=ttyS0 root=/dev/vda rw"
RTT = 0.5  # seconds of fake time each command costs


BOOT_TIME_COMMAND = "uptime --since"


class Up:
    def __init__(self, boot_id, release, cmdline=CMDLINE, loaded=True, status=None, boot_time=None):
        self.boot_id, self.release, self.cmdline = boot_id, release, cmdline
        self.loaded, self.status = loaded, status
        # What BOOT_TIME_COMMAND prints in this boot (a time derived from the boot_id by default).
        self.boot_time = boot_time if boot_time is not None else "2026-12-01 %s" % boot_id[:2]


DOWN = None


class FakeHost:
    """The host over time: a list of (until fake time, state); the last state lasts forever."""

    def __init__(self, timeline, test_rc=0, test_ok_from=None):
        self.timeline = timeline
        self.test_rc = test_rc
        self.test_ok_from = test_ok_from  # fake time from which test commands succeed
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
        if cmd == "false":
            return {"rc": 1, "stdout": "", "stderr": ""}
        if cmd == BOOT_TIME_COMMAND:
            return {"rc": 0, "stdout": state.boot_time + "\n", "stderr": ""}
        if self.test_ok_from is not None:
            ok = self.clock >= self.test_ok_from
            return {"rc": 0 if ok else 1, "stdout": "", "stderr": "" if ok else "not ready yet"}
        return {"rc": self.test_rc, "stdout": "root\n" if self.test_rc == 0 else "",
                "stderr": "" if self.test_rc == 0 else "test failed"}


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
    plugin = action.ActionModule(FakeTask("fleetboot.kexec.kexec_reboot", args, check_mode), FakeConnection(transport), None, None, None, None)
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
    assert plugin.module_calls[0][1] == {"fallback": "fail", "method": "auto", "pre_reboot_delay": 0,
                                         "msg": "Reboot initiated by Ansible",
                                         "search_paths": module.DEFAULT_SEARCH_PATHS}
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


def test_unload_prefers_kexec_file_load_unload():
    fake = sc.FakeSyscalls(arch="x86_64")
    assert module.unload_kexec_image(fake) == "kexec_file_load"
    assert fake.calls == [{"call": "kexec_file_load", "flags": sc.KEXEC_FILE_UNLOAD, "cmdline": "",
                           "kernel_sha256": None, "initrd_sha256": None}]


def test_unload_falls_back_to_kexec_load_with_no_segments():
    fake = sc.FakeSyscalls(arch="x86_64").fail("kexec_file_load", errno.ENOSYS)
    assert module.unload_kexec_image(fake) == "kexec_load"
    assert fake.calls[1]["call"] == "kexec_load" and fake.calls[1]["segments"] == []
    assert fake.calls[1]["flags"] == sc.KEXEC_ARCH_X86_64


def test_unload_failure_refuses_the_cold_reboot():
    fake = sc.FakeSyscalls(arch="x86_64").fail("kexec_file_load", errno.EPERM).fail("kexec_load", errno.EPERM)
    with pytest.raises(module.RebootError) as info:
        module.unload_kexec_image(fake)
    assert "cannot unload" in str(info.value) and "not rebooted" in str(info.value)
    assert "kexec_file_load(KEXEC_FILE_UNLOAD) failed" in str(info.value)


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


# -- a drop-in for ansible.builtin.reboot ---------------------------------------------------------

BUILTIN_REBOOT = pytest.importorskip("ansible.plugins.action.reboot").ActionModule


def builtin_reboot_doc():
    import yaml  # pylint: disable=import-outside-toplevel  # controller-side test tool
    from ansible.modules import reboot as builtin_module  # pylint: disable=import-outside-toplevel
    return yaml.safe_load(builtin_module.DOCUMENTATION)


def module_argument_spec(monkeypatch):
    """The argument spec the host-side module hands AnsibleModule."""
    seen = {}

    class Captured(Exception):
        pass

    def fake_module(argument_spec, **kwargs):
        seen.update(argument_spec=argument_spec, **kwargs)
        raise Captured()

    monkeypatch.setattr(module, "AnsibleModule", fake_module)
    with pytest.raises(Captured):
        module.main()
    return seen["argument_spec"]


def test_every_builtin_reboot_option_is_accepted_with_its_type_and_default(monkeypatch):
    doc = builtin_reboot_doc()["options"]
    assert set(BUILTIN_REBOOT._VALID_ARGS) == set(doc)  # the builtin's list and its docs agree
    spec = module_argument_spec(monkeypatch)
    for name in BUILTIN_REBOOT._VALID_ARGS:
        assert name in action.ActionModule._VALID_ARGS and name in spec, name
        assert action.ARGUMENT_SPEC[name]["type"] == doc[name]["type"], name
        if doc[name].get("elements"):
            assert action.ARGUMENT_SPEC[name]["elements"] == doc[name]["elements"], name
    # Defaults that mean the same thing are the same value; reboot_command's default is "per OS"
    # there and ours is documented on the option, boot_time_command's default reads the boot_id,
    # which this module always compares.
    for name in ("msg", "pre_reboot_delay", "post_reboot_delay", "reboot_timeout", "test_command",
                 "search_paths", "connect_timeout"):
        assert action.ARGUMENT_SPEC[name].get("default") == doc[name].get("default"), name
    assert doc["boot_time_command"]["default"] == "cat /proc/sys/kernel/random/boot_id"
    assert "/proc/sys/kernel/random/boot_id" in action.PROBE_COMMAND


def test_module_and_action_argument_specs_are_the_same(monkeypatch):
    assert module_argument_spec(monkeypatch) == action.ARGUMENT_SPEC


def test_documented_options_match_the_argument_spec():
    import yaml  # pylint: disable=import-outside-toplevel
    options = yaml.safe_load(module.DOCUMENTATION)["options"]
    # connect_timeout comes from the fleetboot.kexec.host.wait doc fragment.
    assert set(options) | {"connect_timeout"} == set(action.ARGUMENT_SPEC)


def test_a_task_written_for_builtin_reboot_runs_unchanged():
    host = FakeHost(kexec_timeline(old_for=5, down_for=10))
    args = dict(msg="Kernel update", reboot_timeout=300, test_command="systemctl is-system-running",
                connect_timeout=5, pre_reboot_delay=0, post_reboot_delay=2,
                search_paths=["/usr/sbin", "/usr/bin"])
    plugin, res = run(host, **args)
    assert not res.get("failed"), res
    assert res["rebooted"] is True and res["new_boot_id"] == NEW
    sent = plugin.module_calls[0][1]
    assert sent["msg"] == "Kernel update" and sent["search_paths"] == ["/usr/sbin", "/usr/bin"]
    assert "systemctl is-system-running" in host.commands


def test_unknown_option_is_refused_like_builtin_reboot():
    host = FakeHost([(float("inf"), Up(OLD, OLD_RELEASE))])
    with pytest.raises(Exception) as info:
        run(host, reboot_timeout_sec=30)
    assert "reboot_timeout_sec" in str(info.value)


def test_boot_time_command_must_change_beside_the_boot_id():
    host = FakeHost(kexec_timeline(old_for=5, down_for=10))
    plugin, res = run(host, boot_time_command=BOOT_TIME_COMMAND)
    assert not res.get("failed"), res
    runs = [i for i, c in enumerate(host.commands) if c == BOOT_TIME_COMMAND]
    probes = [i for i, c in enumerate(host.commands) if c == action.PROBE_COMMAND]
    # Once before the trigger, once after the new boot_id answered.
    assert len(runs) == 2 and runs[0] < 2 and runs[1] > probes[-1]


def test_boot_time_command_that_does_not_change_fails_after_reboot_timeout():
    same = "2026-12-01 08:00:00"
    host = FakeHost([(5, Up(OLD, OLD_RELEASE, boot_time=same)), (15, DOWN),
                     (float("inf"), Up(NEW, NEW_RELEASE, boot_time=same))])
    plugin, res = run(host, boot_time_command=BOOT_TIME_COMMAND, reboot_timeout=60)
    assert res["failed"] and res["rebooted"] is True
    assert "boot_time_command 'uptime --since' did not show a new boot within 60 s" in res["msg"]
    assert "still prints '%s'" % same in res["msg"]
    assert host.clock >= 60 and "whoami" not in host.commands


def test_boot_time_command_failing_before_the_reboot_does_not_trigger():
    host = FakeHost([(float("inf"), Up(OLD, OLD_RELEASE))])
    plugin, res = run(host, boot_time_command="false")
    assert res["failed"] and res["rebooted"] is False
    assert "boot_time_command 'false' failed before the reboot (exit 1" in res["msg"]
    assert "not rebooted" in res["msg"]
    assert plugin.module_calls == []


def test_test_command_gets_its_own_reboot_timeout_like_builtin_reboot():
    # Back at t=~16; the test command succeeds only from t=50. With one 40 s window counted from
    # the trigger this would fail; ansible.builtin.reboot gives the test command 40 s of its own.
    host = FakeHost(kexec_timeline(old_for=5, down_for=10), test_ok_from=50)
    plugin, res = run(host, reboot_timeout=40)
    assert not res.get("failed"), res
    host = FakeHost(kexec_timeline(old_for=5, down_for=10), test_ok_from=90)
    plugin, res = run(host, reboot_timeout=40)
    assert res["failed"] and "did not succeed within 40 s" in res["msg"] and "not ready yet" in res["msg"]


def test_refused_custom_reboot_command_falls_back_cold_without_the_command_or_the_message():
    failed = {"boot_id": OLD, "state": "failed", "method": "custom", "time": 3.0,
              "msg": "reboot_command '/usr/sbin/my-reboot' failed (exit 3): busy"}
    host = FakeHost([(3, Up(OLD, OLD_RELEASE)), (float("inf"), Up(OLD, OLD_RELEASE, status=failed))])

    def module_result(h, args):
        if args["method"] == "cold":
            h.timeline = [(h.clock + 5, Up(OLD, OLD_RELEASE)), (h.clock + 20, DOWN),
                          (float("inf"), Up(NEW, OLD_RELEASE, loaded=False))]
            return default_module_result(h, args)
        return {"changed": True, "method": "custom", "init": "systemd", "command": ["/usr/sbin/my-reboot"]}

    plugin, res = run(host, fallback="cold", reboot_command="my-reboot", msg="going down",
                      module_result=module_result)
    assert not res.get("failed"), res
    first, cold = plugin.module_calls[0][1], plugin.module_calls[1][1]
    assert first["reboot_command"] == "my-reboot" and first["msg"] == "going down"
    assert cold["method"] == "cold" and "reboot_command" not in cold and cold["msg"] == ""
    assert res["method"] == "cold" and "failed (exit 3): busy" in res["reason"]


def test_refused_custom_reboot_command_with_fallback_fail_fails_at_once():
    failed = {"boot_id": OLD, "state": "failed", "method": "custom", "time": 3.0,
              "msg": "reboot_command 'x' failed (exit 1): no"}
    host = FakeHost([(3, Up(OLD, OLD_RELEASE)), (float("inf"), Up(OLD, OLD_RELEASE, status=failed))])

    def module_result(h, args):
        return {"changed": True, "method": "custom", "init": "systemd", "command": ["x"]}

    plugin, res = run(host, reboot_command="x", module_result=module_result)
    assert res["failed"] and "custom reboot was refused on the host" in res["msg"]
    assert len(plugin.module_calls) == 1 and host.clock < 60


def executable(directory, name):
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_find_command_searches_only_search_paths(tmp_path, monkeypatch):
    on_path = tmp_path / "on-path"
    listed = tmp_path / "listed"
    on_path.mkdir()
    listed.mkdir()
    executable(on_path, "my-reboot")
    monkeypatch.setenv("PATH", str(on_path))
    assert module.find_command("my-reboot", [str(listed)]) is None  # PATH is ignored
    wanted = executable(listed, "my-reboot")
    assert module.find_command("my-reboot", [str(listed)]) == wanted
    assert module.find_command(wanted, []) == wanted  # an absolute path needs no search
    (listed / "plain").write_text("")
    assert module.find_command(str(listed / "plain"), []) is None  # not executable


def test_resolve_reboot_command(tmp_path):
    prog = executable(tmp_path, "shutdown")
    paths = [str(tmp_path)]
    assert module.resolve_reboot_command("shutdown -r now", paths) == prog + " -r now"
    assert module.resolve_reboot_command("SYSTEMCTL_SKIP_AUTO_KEXEC=1 shutdown -r now", paths) == \
        "SYSTEMCTL_SKIP_AUTO_KEXEC=1 %s -r now" % prog
    with pytest.raises(module.RebootError) as info:
        module.resolve_reboot_command("systemctl kexec", paths)
    assert "systemctl is not in search_paths (%s)" % tmp_path in str(info.value)
    assert "not rebooted" in str(info.value)
    with pytest.raises(module.RebootError) as info:
        module.resolve_reboot_command("/nonexistent/reboot", paths)
    assert "/nonexistent/reboot is not an executable file" in str(info.value)
    with pytest.raises(module.RebootError):
        module.resolve_reboot_command("A=1", paths)


def test_init_system_needs_systemctl_in_search_paths(tmp_path):
    (tmp_path / "run" / "systemd" / "system").mkdir(parents=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    assert module.init_system(str(tmp_path), [str(bindir)]) == "sysv"
    executable(bindir, "systemctl")
    assert module.init_system(str(tmp_path), [str(bindir)]) == "systemd"


def test_choose_method_with_a_custom_command_needs_no_loaded_image():
    assert module.choose_method("auto", "fail", False, custom=True) == ("custom", None)
    assert module.choose_method("cold", "fail", False, custom=True)[0] == "cold"


def test_announce_sends_msg_through_wall_from_search_paths(tmp_path):
    wall = executable(tmp_path, "wall")
    calls = []

    def runner(argv, **kw):
        calls.append((argv, kw["input"], kw["timeout"]))
        return Proc(0)

    assert module.announce("Kernel update", [str(tmp_path)], runner=runner) == (True, None)
    assert calls == [([wall], b"Kernel update\n", module.WALL_TIMEOUT)]
    calls[:] = []
    assert module.announce("", [str(tmp_path)], runner=runner) == (False, None)
    assert calls == []
    sent, warning = module.announce("x", [str(tmp_path / "none")], runner=runner)
    assert not sent and "no wall command in search_paths" in warning and calls == []

    def failing(argv, **kw):
        return Proc(1, b"wall: cannot get tty name\n")

    sent, warning = module.announce("x", [str(tmp_path)], runner=failing)
    assert not sent and warning == "msg was not sent: %s exited 1: wall: cannot get tty name" % wall


def test_custom_reboot_command_runs_through_sh_and_reports_only_real_refusals():
    calls = []

    def runner_with(rc, out=b""):
        def runner(argv, **kw):
            calls.append(argv)
            return Proc(rc, out)
        return runner

    assert module.run_reboot_command("/sbin/reboot", runner=runner_with(0)) is None
    assert calls == [["/bin/sh", "-c", "/sbin/reboot"]]
    msg = module.run_reboot_command("/sbin/reboot", runner=runner_with(1, b"Access denied\n"))
    assert msg == "reboot_command '/sbin/reboot' failed (exit 1): Access denied"
    # Killed by a signal: the shutdown it started is stopping every process.
    assert module.run_reboot_command("/sbin/reboot", runner=runner_with(-15)) is None


def test_systemd_shutdown_uses_the_systemctl_found_in_search_paths():
    calls = []

    def runner(argv, **kw):
        calls.append(argv)
        return Proc(0)

    module.run_shutdown("systemd", "kexec", OLD, runner=runner, systemctl="/usr/bin/systemctl")
    assert calls == [["/usr/bin/systemctl", "--no-block", "kexec"]]


class RebootLibc:
    """Stands in for libc's reboot(): records the command, reports a refusal."""

    def __init__(self):
        self.reboots = []

    def reboot(self, cmd):
        self.reboots.append(cmd.value)
        return -1


def test_sysv_kexec_stops_services_jumps_through_the_syscall_layer_and_falls_back_cold(tmp_path, monkeypatch):
    rc6 = tmp_path / "rc6.d"
    rc6.mkdir()
    for name in ("K01ssh", "K02networking", "K99reboot"):
        (rc6 / name).write_text("#!/bin/sh\n")
    ran = []

    def runner(argv, **kwargs):
        ran.append(argv)
        return Proc(0)
    monkeypatch.setattr(module.os, "sync", lambda: ran.append(["sync"]))
    fake, libc = sc.FakeSyscalls(arch="x86_64"), RebootLibc()
    # Nothing loaded: the kernel's reboot(KEXEC) fails (EINVAL), and the host must still go down.
    msg = module.run_shutdown("sysv", "kexec", OLD, libc=libc, runner=runner, rc6_dir=str(rc6), syscalls=fake)
    assert [a[0].rsplit("/", 1)[-1] for a in ran[:2]] == ["K01ssh", "K02networking"] and ran[2] == ["sync"]
    assert fake.names() == ["reboot"] and fake.calls[0]["cmd"] == sc.LINUX_REBOOT_CMD_KEXEC
    assert libc.reboots == [module.RB_AUTOBOOT] and "reboot failed" in msg
