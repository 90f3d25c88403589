"""The kdump_crash action: refusals, the crash, the wait through the capture kernel, the dump."""

import json

import pytest

from ansible.errors import AnsibleConnectionFailure

from ansible_collections.fleetboot.kexec.tests.unit.plugins.action.fakes import FakeConnection, FakeTask
from ansible_collections.fleetboot.kexec.plugins.action import kdump_crash as action

OLD = "11111111-1111-4111-8111-111111111111"
CAPTURE = "33333333-3333-4333-8333-333333333333"
NEW = "22222222-2222-4222-8222-222222222222"
RELEASE = "6.1.0-54-amd64"
RTT = 0.5  # seconds of fake time each command costs
DUMP = "/var/crash/2026-11-22-10:00:00"
OLD_DUMP = "/var/crash/2026-11-21-09:00:00"


class Up:
    def __init__(self, boot_id, crash_loaded=True, vmcore=False, files=(), captures=()):
        self.boot_id, self.crash_loaded, self.vmcore, self.files = boot_id, crash_loaded, vmcore, files
        self.captures = captures


DOWN = None


class FakeHost:
    """The host over fake time: [(until, state)], the last state lasting forever.

    The timeline starts when the crash is triggered (before that the host is `before`).
    """

    def __init__(self, before, timeline, trigger_rc=0):
        self.before = before
        self.timeline = timeline
        self.trigger_rc = trigger_rc
        self.clock = 0.0
        self.triggered_at = None
        self.commands = []

    def state(self):
        if self.triggered_at is None:
            return self.before
        t = self.clock - self.triggered_at
        for until, state in self.timeline:
            if t < until:
                return state
        return self.timeline[-1][1]

    def execute(self, cmd, sudoable=True, **kwargs):
        del sudoable, kwargs
        self.clock += RTT
        self.commands.append(cmd)
        if cmd == action.trigger_command():
            self.triggered_at = self.clock
            return {"rc": self.trigger_rc, "stdout": "triggered\n" if self.trigger_rc == 0 else "",
                    "stderr": "" if self.trigger_rc == 0 else "sh: /proc/sysrq-trigger: Permission denied"}
        state = self.state()
        if state is DOWN:
            raise AnsibleConnectionFailure("ssh: connect to host 127.0.0.1 port 2222: Connection timed out")
        assert cmd == action.probe_command("/var/crash"), cmd
        m = action.MARK
        files = "\n".join("%d %s" % (size, path) for size, path in state.files)
        log = "\n".join([str(len(state.captures))] + [json.dumps(c) for c in state.captures[-3:]])
        out = "\n".join([m, state.boot_id, m, RELEASE, m, "1" if state.crash_loaded else "0", m,
                         "vmcore" if state.vmcore else "", m, files, m, log, m]) + "\n"
        return {"rc": 0, "stdout": out, "stderr": ""}


def run(host, check_mode=False, transport="ssh", **args):
    plugin = action.ActionModule(FakeTask("fleetboot.kexec.kdump_crash", args, check_mode), FakeConnection(transport), None, None, None, None)
    plugin._now = lambda: host.clock

    def sleep(seconds):
        host.clock += seconds

    plugin._sleep = sleep
    plugin._low_level_execute_command = host.execute
    return plugin, plugin.run(task_vars={})


OLD_FILES = ((1000, OLD_DUMP + "/vmcore"), (10, OLD_DUMP + "/dmesg.txt"))
NEW_FILES = OLD_FILES + ((2040109465, DUMP + "/vmcore"), (5000, DUMP + "/dmesg.txt"))


def crash_timeline(capture_at=35.0, capture_for=40.0, reboot_for=25.0, files=NEW_FILES):
    """Panic after the delay, capture kernel answers at capture_at, saves, reboots, normal boot."""
    return [(action.SYSRQ_DELAY + 0.2, Up(OLD, files=OLD_FILES)),
            (capture_at, DOWN),
            (capture_at + capture_for, Up(CAPTURE, crash_loaded=False, vmcore=True, files=OLD_FILES)),
            (capture_at + capture_for + reboot_for, DOWN),
            (float("inf"), Up(NEW, files=files))]


def test_crash_waits_for_the_normal_boot_with_a_new_dump():
    host = FakeHost(Up(OLD, files=OLD_FILES), crash_timeline())
    plugin, res = run(host)
    assert not res.get("failed"), res
    assert res["changed"] and res["crashed"]
    assert res["vmcore"] == DUMP + "/vmcore" and res["vmcore_size"] == 2040109465
    assert res["dmesg"] == DUMP + "/dmesg.txt" and res["dump_dir"] == DUMP
    assert res["dumps_before"] == [OLD_DUMP]
    assert (res["old_boot_id"], res["capture_boot_id"], res["new_boot_id"]) == (OLD, CAPTURE, NEW)
    assert 33 <= res["capture_answered"] <= 35  # the timeline counts from the trigger, 2 s before the panic
    assert 98 <= res["elapsed"] <= 101
    assert res["downtime"] <= res["elapsed"]
    assert res["crash_loaded_after"] is True
    # sysrq is enabled and the crash is detached, so the trigger's session returns first.
    trigger = action.trigger_command()
    assert "/proc/sys/kernel/sysrq" in trigger and "setsid -f" in trigger and "sysrq-trigger" in trigger
    assert host.commands.count(trigger) == 1


def test_refuses_without_a_loaded_crash_kernel():
    host = FakeHost(Up(OLD, crash_loaded=False), crash_timeline())
    plugin, res = run(host)
    assert res["failed"] and not res["crashed"] and not res["changed"]
    assert "no crash kernel is loaded" in res["msg"] and "hang or reboot" in res["msg"]
    assert action.trigger_command() not in host.commands


def test_check_mode_does_not_crash():
    host = FakeHost(Up(OLD, crash_loaded=False), crash_timeline())
    plugin, res = run(host, check_mode=True)
    assert not res.get("failed"), res
    assert res["changed"] and not res["crashed"] and res["msg"].startswith("would crash")
    assert action.trigger_command() not in host.commands


def test_refuses_the_local_connection():
    host = FakeHost(Up(OLD), crash_timeline())
    plugin, res = run(host, transport="local")
    assert res["failed"] and "control node" in res["msg"]
    assert host.commands == []


def test_refuses_inside_a_capture_kernel():
    host = FakeHost(Up(CAPTURE, vmcore=True), crash_timeline())
    plugin, res = run(host)
    assert res["failed"] and "capture kernel" in res["msg"]


def test_failed_trigger_is_reported():
    host = FakeHost(Up(OLD), crash_timeline(), trigger_rc=1)
    plugin, res = run(host)
    assert res["failed"] and "could not be triggered" in res["msg"] and "Permission denied" in res["msg"]


def test_a_host_that_does_not_crash_fails_clearly():
    host = FakeHost(Up(OLD), [(float("inf"), Up(OLD))])
    plugin, res = run(host, timeout=300)
    assert res["failed"] and "did not crash" in res["msg"] and res["crashed"] is False


def test_back_without_a_new_dump_fails_naming_what_was_seen():
    host = FakeHost(Up(OLD, files=OLD_FILES), crash_timeline(files=OLD_FILES + ((9, DUMP + ".incomplete/vmcore"),)))
    plugin, res = run(host)
    assert res["failed"]
    assert "no new vmcore" in res["msg"] and DUMP + ".incomplete" in res["msg"]
    assert "capture kernel answered as boot %s" % CAPTURE in res["msg"]
    assert res["new_boot_id"] == NEW


def test_firmware_reboot_without_capture_kernel_fails():
    host = FakeHost(Up(OLD, files=OLD_FILES),
                    [(action.SYSRQ_DELAY + 0.2, Up(OLD)), (30, DOWN), (float("inf"), Up(NEW, files=OLD_FILES))])
    plugin, res = run(host)
    assert res["failed"] and "no capture kernel was seen" in res["msg"]


def test_capture_kernel_that_never_reboots_times_out():
    host = FakeHost(Up(OLD), [(action.SYSRQ_DELAY + 0.2, Up(OLD)), (30, DOWN),
                              (float("inf"), Up(CAPTURE, vmcore=True))])
    plugin, res = run(host, timeout=200)
    assert res["failed"] and "capture kernel answered" in res["msg"] and "200 s" in res["msg"]
    assert res["elapsed"] >= 200


def test_host_that_never_comes_back_times_out():
    host = FakeHost(Up(OLD), [(action.SYSRQ_DELAY + 0.2, Up(OLD)), (float("inf"), DOWN)])
    plugin, res = run(host, timeout=120)
    assert res["failed"] and "did not answer again within 120 s" in res["msg"]


def test_a_fast_capture_kernel_that_is_never_seen_still_counts():
    host = FakeHost(Up(OLD, files=OLD_FILES),
                    [(action.SYSRQ_DELAY + 0.2, Up(OLD)), (90, DOWN), (float("inf"), Up(NEW, files=NEW_FILES))])
    plugin, res = run(host)
    assert not res.get("failed"), res
    assert "capture_boot_id" not in res and res["vmcore"] == DUMP + "/vmcore"


def test_warns_when_the_new_boot_has_no_crash_kernel(monkeypatch):
    warnings = []
    monkeypatch.setattr(action.display, "warning", warnings.append)
    timeline = crash_timeline()
    timeline[-1] = (float("inf"), Up(NEW, crash_loaded=False, files=NEW_FILES))
    plugin, res = run(FakeHost(Up(OLD, files=OLD_FILES), timeline))
    assert not res.get("failed"), res
    assert res["crash_loaded_after"] is False
    assert any("without a loaded crash kernel" in w for w in warnings)


@pytest.mark.parametrize("text,expected", [
    ("", {}),
    ("12 /d/a/vmcore\n3 /d/a/dmesg.txt\n", {"/d/a": (12, "/d/a/dmesg.txt", True)}),
    ("12 /d/a.incomplete/vmcore\n", {"/d/a.incomplete": (12, None, False)}),
    ("3 /d/b/dmesg.txt\nnoise\n", {"/d/b": (None, "/d/b/dmesg.txt", False)}),
])
def test_parse_dumps(text, expected):
    dumps = action.parse_dumps(text)
    assert dict((d, (x.vmcore_size, x.dmesg, x.complete)) for d, x in dumps.items()) == expected


def test_probe_command_quotes_the_path():
    assert "'/var/my crash'" in action.probe_command("/var/my crash")


OLD_CAPTURE = {"target": "local", "path": OLD_DUMP, "size": 1000}
SERVER_DUMP = "/srv/crash/vm1-2026-11-22-10:00:00"


def test_a_dump_sent_to_the_dump_server_counts():
    sent = {"target": "ssh", "server": "root@10.0.2.2:2222", "path": SERVER_DUMP, "size": 41234567,
            "remote_error": None, "method": "makedumpfile"}
    timeline = crash_timeline(files=OLD_FILES)
    timeline[-1] = (float("inf"), Up(NEW, files=OLD_FILES, captures=(OLD_CAPTURE, sent)))
    plugin, res = run(FakeHost(Up(OLD, files=OLD_FILES, captures=(OLD_CAPTURE,)), timeline))
    assert not res.get("failed"), res
    assert (res["target"], res["dump_server"], res["vmcore"], res["vmcore_size"]) == (
        "ssh", "root@10.0.2.2:2222", SERVER_DUMP + "/vmcore", 41234567)
    assert res["dmesg"] == SERVER_DUMP + "/dmesg.txt" and res["capture_record"]["method"] == "makedumpfile"


def test_a_local_fallback_is_reported(monkeypatch):
    warnings = []
    monkeypatch.setattr(action.display, "warning", warnings.append)
    fell_back = {"target": "local", "path": DUMP, "size": 2040109465,
                 "remote_error": "dump server root@10.0.2.2:2222: ssh exited 255: Connection refused (20 attempts in 60 s)"}
    timeline = crash_timeline()
    timeline[-1] = (float("inf"), Up(NEW, files=NEW_FILES, captures=(OLD_CAPTURE, fell_back)))
    plugin, res = run(FakeHost(Up(OLD, files=OLD_FILES, captures=(OLD_CAPTURE,)), timeline))
    assert not res.get("failed"), res
    assert res["target"] == "local" and res["vmcore"] == DUMP + "/vmcore"
    assert "Connection refused" in res["remote_error"] and "locally (dump server" in res["msg"]
    assert any("saved locally" in w for w in warnings)


def test_a_capture_that_failed_says_why_at_once():
    failed = {"error": "not enough space on /var/crash for the dump: ..."}
    timeline = crash_timeline(files=OLD_FILES)
    timeline[-1] = (float("inf"), Up(NEW, files=OLD_FILES, captures=(OLD_CAPTURE, failed)))
    host = FakeHost(Up(OLD, files=OLD_FILES, captures=(OLD_CAPTURE,)), timeline)
    plugin, res = run(host)
    assert res["failed"] and "could not save the dump: not enough space" in res["msg"]
    assert "captures.log" in res["msg"]


def test_parse_captures_skips_noise():
    assert action.parse_captures("") == (0, [])
    assert action.parse_captures("5\n{\"target\": \"ssh\"}\nnot json\n[1]\n") == (5, [{"target": "ssh"}])
