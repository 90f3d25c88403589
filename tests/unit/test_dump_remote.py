"""Dumps to a dump server over SSH: the flattened stream (flat.py), the server's receiver
(receive.py, run as installed there: the file alone beside flat.py, under a fake ssh), and the
capture kernel's side (remote.py) with its fallback to a local dump; makedumpfile is the fake of
fake_tools.py."""

import io
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import cli
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.dump import flat, receive, remote
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.dump import save as capture

from tests.unit import fake_tools
from tests.unit import test_capture as capture_tests
from tests.unit.test_capture import STAMP, T0, clock, make_source, plenty

# The synthetic crash dump and the empty PATH of test_capture.py, as fixtures here too.
core = capture_tests.core
no_tools = capture_tests.no_tools


# ---- the flattened format ---------------------------------------------------------------------

def _stream(*records):
    return flat.header() + b"".join(flat.record(o, d) for o, d in records) + flat.end()


def test_flat_records_read_back_in_pieces():
    data = _stream((8192, b"x" * 10), (0, b"head"))
    pieces = list(flat.records(io.BytesIO(data).read, chunk=4))
    assert pieces == [(8192, b"xxxx"), (8196, b"xxxx"), (8200, b"xx"), (0, b"head")]


@pytest.mark.parametrize("data, message", [
    (b"makedumpfile", "ended inside the header"),
    (b"notadump".ljust(4096, b"\0"), "no makedumpfile signature"),
    (_stream((0, b"abc"))[:-16], "ended inside a record header"),
    (_stream((0, b"abcdef"))[:4096 + 16 + 3], "ended inside a record"),
    (flat.header() + flat.record(-5, b"x"), "corrupted"),
])
def test_flat_refuses_what_is_not_a_whole_stream(data, message):
    with pytest.raises(flat.FlatError, match=message):
        list(flat.records(io.BytesIO(data).read))


def test_sparse_stream_rebuilds_the_file_with_its_holes(tmp_path):
    src = tmp_path / "vmcore"
    data = make_source(src, "ZDDZZZZD" + "Z" * 8)  # ends in zeros: the last byte is sent anyway
    stream = b"".join(remote.sparse_stream(str(src), chunk_size=16384))
    pieces = list(flat.records(io.BytesIO(stream).read))
    assert sum(len(d) for o, d in pieces) == 3 * 4096 + 1
    out = tmp_path / "rebuilt"
    writer = receive.Writer(str(out))
    for offset, piece in pieces:
        writer.write(offset, piece)
    writer.finish()
    assert out.read_bytes() == data


# ---- the receiver on the dump server ------------------------------------------------------------

@pytest.fixture
def server(tmp_path, monkeypatch, no_tools):
    """A dump server: receive.py installed alone, its destination, the fake ssh that runs it."""
    receiver = fake_tools.install_receiver(tmp_path / "server-lib")
    dest = tmp_path / "server-crash"
    dest.mkdir()
    fake_tools.install_ssh(no_tools)
    monkeypatch.setenv("FAKE_RECEIVER", receiver)
    monkeypatch.setenv("FAKE_SERVER_DEST", str(dest))
    monkeypatch.setenv("PATH", "%s:%s" % (no_tools, os.path.dirname(sys.executable)))
    return dest


def receiver(server_dest, request, stdin=b"", keep=None):
    """Run the installed receiver as sshd would run the forced command."""
    argv = [sys.executable, os.environ["FAKE_RECEIVER"], "--dest", str(server_dest)]
    if keep:
        argv += ["--keep", str(keep)]
    proc = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                          env=dict(os.environ, SSH_ORIGINAL_COMMAND=request))
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def _upload(body, dmesg=b"[ 1.0] sysrq: Trigger a crash\n"):
    return _stream((0, body)) + b"FILE dmesg.txt %d\n" % len(dmesg) + dmesg + b"DONE\n"


def test_receiver_takes_a_whole_dump(server):
    rc, out, err = receiver(server, "receive vm1 2026-12-05-01:02:03", _upload(b"ELFDATA"))
    assert rc == 0, err
    answer = json.loads(out)
    assert answer["path"] == str(server / "vm1-2026-12-05-01:02:03") and answer["size"] == 7
    assert answer["rebuilt_by"] == "fleetboot"  # no makedumpfile on this server
    assert sorted(os.listdir(answer["path"])) == ["dmesg.txt", "vmcore"]
    assert (server / "vm1-2026-12-05-01:02:03" / "vmcore").read_bytes() == b"ELFDATA"


def test_receiver_uses_makedumpfile_R_when_the_server_has_it(server, no_tools):
    fake_tools.install_makedumpfile(no_tools)
    rc, out, err = receiver(server, "receive vm1 2026-12-05-01:02:03", _upload(b"KDUMPDATA"))
    assert rc == 0, err
    assert json.loads(out)["rebuilt_by"] == "makedumpfile -R"
    assert (server / "vm1-2026-12-05-01:02:03" / "vmcore").read_bytes() == b"KDUMPDATA"


@pytest.mark.parametrize("cut", [100, 4096 + 16 + 3, len(_upload(b"ELFDATA")) - 5])
@pytest.mark.parametrize("with_makedumpfile", [False, True])
def test_receiver_leaves_nothing_of_a_stream_cut_short(server, no_tools, cut, with_makedumpfile):
    if with_makedumpfile:
        fake_tools.install_makedumpfile(no_tools)
    rc, out, err = receiver(server, "receive vm1 2026-12-05-01:02:03", _upload(b"ELFDATA")[:cut])
    assert rc == 1 and out == "" and err.startswith("fleetboot-kdump-receive: "), (out, err)
    assert os.listdir(str(server)) == []


def test_receiver_refuses_anything_else(server):
    for request in ("", "sh -c id", "receive ../etc 2026-12-05-01:02:03", "receive vm1 yesterday",
                    "receive vm1 2026-12-05-01:02:03 extra", "check now"):
        rc, out, err = receiver(server, request, _upload(b"x"))
        assert rc == 1 and out == "", (request, out)
        assert "refused" in err or "bad host" in err, (request, err)
    assert os.listdir(str(server)) == []


def test_receiver_check_answers_with_free_space(server):
    rc, out, err = receiver(server, "check")
    assert rc == 0, err
    answer = json.loads(out)
    assert answer["dest"] == str(server) and answer["free_bytes"] > 0 and answer["makedumpfile"] is None
    rc, out, err = receiver(server / "missing", "check")
    assert rc == 1 and "not a writable directory" in err


def test_receiver_cleans_its_dead_leftovers_and_keeps_n(server):
    for name in ("vm1-2026-01-01-00:00:00", "vm1-2026-02-01-00:00:00", "vm1-2026-03-01-00:00:00.incomplete",
                 "vm10-2026-03-01-00:00:00.incomplete", "vm1-x-2026-03-01-00:00:00.incomplete", "vm2-2026-01-01-00:00:00"):
        (server / name).mkdir()
    rc, out, err = receiver(server, "receive vm1 2026-12-05-01:02:03", _upload(b"x"), keep=2)
    assert rc == 0, err
    assert json.loads(out)["pruned"] == ["vm1-2026-01-01-00:00:00"]
    # The other hosts' directories, finished or being written, are not this host's to touch.
    assert sorted(os.listdir(str(server))) == ["vm1-2026-02-01-00:00:00", "vm1-2026-12-05-01:02:03",
                                               "vm1-x-2026-03-01-00:00:00.incomplete", "vm10-2026-03-01-00:00:00.incomplete",
                                               "vm2-2026-01-01-00:00:00"]


def test_receiver_stops_before_the_server_disk_fills(tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    stream = receive.Input(os.open(_write(tmp_path / "in", _upload(b"y" * 1000)), os.O_RDONLY))
    with pytest.raises(receive.ReceiveError, match="not enough space on the dump server"):
        receive.receive(str(dest), "vm1", "2026-12-05-01:02:03", stream, which=lambda n: None,
                        free_space=lambda p: 1000, min_free=500)
    assert os.listdir(str(dest)) == []


def _write(path, data):
    path.write_bytes(data)
    return str(path)


# ---- the capture kernel's side: to the server, or locally when it cannot -------------------------

def target(**kwargs):
    kwargs.setdefault("wait", 0)
    return remote.SshTarget("10.0.2.2", user="root", port=2222, key="/etc/fleetboot/kdump_id", known_hosts="/etc/fleetboot/kh",
                            host_name="vm1", **kwargs)


def test_ssh_command_line_is_strict_and_batch():
    argv = target().argv("check")
    assert argv[0] == "ssh" and argv[-2:] == ["root@10.0.2.2", "check"]
    joined = " ".join(argv)
    for option in ("-p 2222", "BatchMode=yes", "-i /etc/fleetboot/kdump_id", "IdentitiesOnly=yes",
                   "StrictHostKeyChecking=yes", "UserKnownHostsFile=/etc/fleetboot/kh", "ServerAliveInterval="):
        assert option in joined, option


def test_dump_streamed_with_makedumpfile_and_rebuilt_on_the_server(tmp_path, core, server, no_tools):
    fake_tools.install_makedumpfile(no_tools)
    local = tmp_path / "local-crash"
    kmsg = tmp_path / "kmsg"  # the capture kernel's own log, as /dev/kmsg gives it
    kmsg.write_text("6,1,1500000,-;crashkernel: physical_start 0x6e000000\n")
    report = remote.save_remote(target(), core, str(local), clock=clock(), kmsg=str(kmsg))
    assert report["target"] == "ssh" and report["remote_error"] is None, report
    assert report["capture_dmesg_error"] is None
    assert (server / ("vm1-" + STAMP) / "capture-dmesg.txt").read_text() == \
        "[    1.500000] crashkernel: physical_start 0x6e000000\n"
    assert report["method"] == "makedumpfile" and report["compression"] == "lzo"
    assert report["path"] == str(server / ("vm1-" + STAMP)) and report["rebuilt_by"] == "makedumpfile -R"
    rebuilt = (server / ("vm1-" + STAMP) / "vmcore").read_bytes()
    assert fake_tools.rebuild_fake_dump(rebuilt) == open(core, "rb").read() and report["size"] == len(rebuilt)
    assert "sysrq: Trigger a crash" in (server / ("vm1-" + STAMP) / "dmesg.txt").read_text()
    assert not local.exists()  # nothing written on the host


def test_sparse_copy_streamed_without_makedumpfile(tmp_path, core, server):
    report = remote.save_remote(target(), core, str(tmp_path / "local"), clock=clock())
    assert report["target"] == "ssh" and report["method"] == "sparse-copy" and report["rebuilt_by"] == "fleetboot"
    assert (server / ("vm1-" + STAMP) / "vmcore").read_bytes() == open(core, "rb").read()
    assert report["dmesg_source"] == "fleetboot"


def test_unreachable_server_falls_back_to_a_local_dump_and_says_so(tmp_path, core, server, monkeypatch):
    monkeypatch.setenv("FAKE_SSH_DOWN", "1")
    said = []
    ticks = iter(range(0, 1000, 5))
    report = remote.save_remote(target(wait=30), core, str(tmp_path / "local"), log=said.append,
                                clock=lambda: T0 + next(ticks), sleep=lambda s: None)
    assert report["target"] == "local" and report["method"] == "sparse-copy"
    assert report["remote_error"].startswith("dump server root@10.0.2.2:2222: ssh exited 255: ssh: connect to host")
    assert "attempts in 30 s" in report["remote_error"]
    assert os.listdir(str(tmp_path / "local")) == [os.path.basename(report["path"])]
    assert any("saving the dump locally under %s instead" % (tmp_path / "local") in line for line in said), said
    assert os.listdir(str(server)) == []


def test_stream_cut_midway_leaves_nothing_on_the_server_and_dumps_locally(tmp_path, core, server, monkeypatch):
    monkeypatch.setenv("FAKE_SSH_CUT", "6000")
    report = remote.save_remote(target(), core, str(tmp_path / "local"), clock=clock())
    assert report["target"] == "local" and "dump server root@10.0.2.2:2222" in report["remote_error"]
    assert os.listdir(str(server)) == []
    assert open(os.path.join(report["path"], "vmcore"), "rb").read() == open(core, "rb").read()


def test_cli_save_vmcore_to_a_server_logs_each_capture(tmp_path, core, server, monkeypatch):
    local = tmp_path / "local"
    argv = ["save-vmcore", "--vmcore", core, "--dest", str(local), "--target", "ssh", "--ssh", "root@10.0.2.2",
            "--ssh-port", "2222", "--host-name", "vm1", "--ssh-wait", "0", "--json"]
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(argv, out=out, err=err) == 0, err.getvalue()
    assert json.loads(out.getvalue())["target"] == "ssh"
    monkeypatch.setenv("FAKE_SSH_DOWN", "1")
    assert cli.main(argv, out=io.StringIO(), err=err) == 0, err.getvalue()
    entries = [json.loads(line) for line in (local / "captures.log").read_text().splitlines()]
    assert [e["target"] for e in entries] == ["ssh", "local"]
    assert entries[0]["path"].startswith(str(server)) and entries[1]["path"].startswith(str(local))
    assert "Connection refused" in entries[1]["remote_error"]
    # A capture that fails altogether is logged too.
    assert cli.main(["save-vmcore", "--vmcore", str(tmp_path / "none"), "--dest", str(local)], out=io.StringIO(),
                    err=io.StringIO()) == 1
    last = json.loads((local / "captures.log").read_text().splitlines()[-1])
    assert "not running in a capture kernel" in last["error"]


def test_cli_dump_tools_reports_the_choice(no_tools):
    out = io.StringIO()
    assert cli.main(["dump-tools", "--json"], out=out, err=io.StringIO()) == 0
    assert json.loads(out.getvalue())["makedumpfile"] is None
    fake_tools.install_makedumpfile(no_tools)
    out = io.StringIO()
    assert cli.main(["dump-tools", "--json"], out=out, err=io.StringIO()) == 0
    report = json.loads(out.getvalue())
    assert (report["version"], report["compressions"], report["compression"], report["flag"]) == (
        "1.7.2", ["lzo", "zlib"], "lzo", "-l")


def test_compression_choices_agree():
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.dump import commands, makedumpfile
    assert commands.COMPRESSIONS == makedumpfile.COMPRESSIONS


def test_local_save_is_unchanged_by_a_target(tmp_path, core, no_tools):
    report = capture.save_vmcore(core, str(tmp_path / "crash"), free_space=plenty, clock=clock())
    assert report["method"] == "sparse-copy"


def test_cli_dump_tools_checks_the_dump_server_once(server, monkeypatch, tmp_path):
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    argv = ["dump-tools", "--json", "--target", "ssh", "--ssh", "kdump@10.0.2.2", "--ssh-port", "2222",
            "--ssh-key", "/etc/fleetboot/k", "--ssh-known-hosts", "/etc/fleetboot/kh", "--ssh-wait", "60"]
    out = io.StringIO()
    assert cli.main(argv, out=out, err=io.StringIO()) == 0
    report = json.loads(out.getvalue())
    assert report["target"] == "ssh" and report["server"]["dest"] == str(server)
    assert log.read_text().split()[-2:] == ["kdump@10.0.2.2", "check"]
    monkeypatch.setenv("FAKE_SSH_DOWN", "1")
    err = io.StringIO()
    assert cli.main(argv, out=io.StringIO(), err=err) == 1
    assert "the dump server kdump@10.0.2.2:2222 does not take dumps from this host: ssh exited 255" in err.getvalue()
    assert "(1 attempt in 0 s)" in err.getvalue()  # once, not for --ssh-wait seconds
