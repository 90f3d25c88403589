"""save-vmcore: the sparse copy, free-space checks, the .incomplete rename, makedumpfile and
vmcore-dmesg (fake executables on PATH), pruning, and the two CLI subcommands."""

import errno
import io
import json
import os
import stat

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import cli
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.dump import save as capture
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch import vmcore_memory
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.dump import printk

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.dump import makedumpfile

from tests.unit import fake_tools
from tests.unit import vmcore_builder as vb


def kernel_log(path):
    """The kernel log of a dump, read through the architecture its core names."""
    return printk.kernel_log(path, vmcore_memory)


T0 = 1795313705.0  # 2026-11-22 02:15:05 UTC
STAMP = "2026-11-22-02:15:05"


def clock(start=T0):
    ticks = iter(range(1000))
    return lambda: start + next(ticks)


def plenty(path):
    return 1 << 40


def make_source(path, pattern, tail=b""):
    """A file of 4 KiB blocks: 'Z' zero, 'D' random data; plus ``tail`` bytes (unaligned end)."""
    data = b"".join(bytes(4096) if c == "Z" else os.urandom(4096) for c in pattern) + tail
    path.write_bytes(data)
    return data


@pytest.fixture
def core(tmp_path):
    """A small synthetic crash dump with a readable kernel log."""
    ring = vb.Ringbuffer(count_bits=4, size_bits=10)
    for k in range(5):
        ring.add(b"boot message %d" % k, 1000000 * k)
    ring.add(b"sysrq: Trigger a crash", 215849618000)
    kernel = vb.Kernel()
    ring.place(kernel)
    return vb.write_core(str(tmp_path / "vmcore"), kernel)


@pytest.fixture
def no_tools(monkeypatch, tmp_path):
    """PATH with only an empty directory: no makedumpfile, no vmcore-dmesg."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def fake_tool(bindir, name, script):
    path = bindir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# ---- the sparse copy --------------------------------------------------------------------------

def test_nonzero_runs():
    chunk = bytes(4096) + b"x" * 4096 * 2 + bytes(4096) + b"\0" * 100 + b"y"
    assert capture._nonzero_runs(chunk) == [(4096, 12288), (16384, len(chunk))]
    assert capture._nonzero_runs(bytes(8192)) == []


def test_sparse_copy_makes_holes_and_keeps_content(tmp_path):
    src = tmp_path / "src"
    data = make_source(src, "DZZZZZZZZZZZZZZZDDZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZDZZZZZZZZZZZ", tail=b"\0" * 1000)
    dst = tmp_path / "dst"
    result = capture.sparse_copy(str(src), str(dst), free_space=plenty, min_free=0, chunk_size=16384)
    assert dst.read_bytes() == data
    assert result == {"size": len(data), "bytes_written": 4 * 4096}
    st = dst.stat()
    assert st.st_size == len(data)
    # Only the four data blocks take space (a file system may round up to a few blocks).
    assert st.st_blocks * 512 <= 8 * 4096 < len(data) // 2


def test_sparse_copy_refuses_a_short_source(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_source(src, "D" * 8)
    reads = iter([os.urandom(16384)])
    monkeypatch.setattr(capture, "_read_full", lambda fd, size: next(reads, b""))
    with pytest.raises(capture.CaptureError, match="ended after 16384 bytes but reports 32768"):
        capture.sparse_copy(str(src), str(tmp_path / "dst"), free_space=plenty, min_free=0, chunk_size=16384)


def test_free_space_checked_before_the_copy(tmp_path, core, no_tools):
    dest = tmp_path / "crash"
    with pytest.raises(capture.CaptureError) as err:
        capture.save_vmcore(core, str(dest), free_space=lambda p: 5 << 20, clock=clock())
    msg = str(err.value)
    assert "not enough space" in msg and "%d available" % (5 << 20) in msg and "bytes needed" in msg
    assert os.listdir(str(dest)) == []  # the partial dump is gone


def test_free_space_running_out_during_the_copy(tmp_path, no_tools):
    src = tmp_path / "src"
    make_source(src, "D" * 16)
    answers = iter([1 << 30, 1 << 30, 1 << 30, 4096])  # someone else fills the disk meanwhile
    dest = tmp_path / "crash"
    with pytest.raises(capture.CaptureError, match=r"16384 bytes needed, 4096 available \(32768 of 65536 bytes copied"):
        capture.save_vmcore(str(src), str(dest), free_space=lambda p: next(answers), clock=clock(), min_free=0,
                            chunk_size=16384)
    assert os.listdir(str(dest)) == []


def test_enospc_from_write_is_a_clean_abort(tmp_path, no_tools, monkeypatch):
    src = tmp_path / "src"
    make_source(src, "D" * 4)

    def full(fd, view):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(capture, "_write_all", full)
    dest = tmp_path / "crash"
    with pytest.raises(capture.CaptureError, match="not enough space"):
        capture.save_vmcore(str(src), str(dest), free_space=plenty, clock=clock())
    assert os.listdir(str(dest)) == []


# ---- save_vmcore ------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def no_host_kmsg(tmp_path, monkeypatch):
    """save_vmcore reads the capture kernel's own log: never this machine's in unit tests."""
    path = tmp_path / "no-kmsg"
    path.write_text("")
    monkeypatch.setattr(capture, "KMSG", str(path))


KMSG = ("6,1,0,-;Linux version 6.1.0-56-powerpc64le\n"
        "6,2,41,-;physical_start    = 0x20000000\n SUBSYSTEM=cpu\n"
        "4,3,2500001,c;hvc0: console [hvc0] enabled\n")


def test_read_kmsg_formats_records_like_dmesg(tmp_path):
    path = tmp_path / "kmsg"
    path.write_text(KMSG + "garbage without a header\n")
    text, error = capture.read_kmsg(str(path))
    assert error is None
    assert text == ("[    0.000000] Linux version 6.1.0-56-powerpc64le\n[    0.000041] physical_start    = 0x20000000\n"
                    "[    2.500001] hvc0: console [hvc0] enabled\n")
    assert capture.read_kmsg(str(tmp_path / "absent")) == ("", "cannot open %s: No such file or directory"
                                                           % (tmp_path / "absent"))


def test_save_vmcore_own_copy_and_reader(tmp_path, core, no_tools):
    dest = tmp_path / "crash"
    kmsg = tmp_path / "kmsg"
    kmsg.write_text(KMSG)
    report = capture.save_vmcore(core, str(dest), free_space=plenty, clock=clock(), kmsg=str(kmsg))
    final = dest / STAMP
    assert report["path"] == str(final) and sorted(os.listdir(str(dest))) == [STAMP]
    assert sorted(os.listdir(str(final))) == ["capture-dmesg.txt", "dmesg.txt", "vmcore"]
    # The capture kernel's own log beside the crashed kernel's: where it ran, what it found.
    assert "physical_start    = 0x20000000" in (final / "capture-dmesg.txt").read_text()
    assert report["capture_dmesg_error"] is None
    assert (final / "vmcore").read_bytes() == open(core, "rb").read()
    assert report["method"] == "sparse-copy" and report["dmesg_source"] == "fleetboot"
    assert report["size"] == report["source_size"] == os.path.getsize(core)
    assert 0 < report["bytes_written"] < report["size"]
    assert report["seconds"] == 1.0 and report["pruned"] == [] and report["makedumpfile_error"] is None
    text = (final / "dmesg.txt").read_text()
    assert text == kernel_log(core)["dmesg"]
    assert text.splitlines()[-1] == "[  215.849618] sysrq: Trigger a crash"
    json.dumps(report)  # plain values only


def test_directory_is_incomplete_until_everything_is_written(tmp_path, core):
    dest = tmp_path / "crash"
    seen = []

    def which(name):
        return "/fake/" + name if name == "vmcore-dmesg" else None

    def run(argv, **kwargs):
        seen.append(sorted(os.listdir(str(dest))))
        seen.append(sorted(os.listdir(str(dest / (STAMP + ".incomplete")))))

        class Done:
            returncode, stdout, stderr = 0, b"[    1.000000] from vmcore-dmesg\n", b""
        return Done()
    report = capture.save_vmcore(core, str(dest), free_space=plenty, which=which, run=run, clock=clock())
    assert seen == [[STAMP + ".incomplete"], ["vmcore"]]
    assert sorted(os.listdir(str(dest))) == [STAMP]
    assert report["dmesg_source"] == "vmcore-dmesg"
    assert (dest / STAMP / "dmesg.txt").read_text() == "[    1.000000] from vmcore-dmesg\n"


def test_second_dump_in_the_same_second_gets_its_own_name(tmp_path, core, no_tools):
    dest = tmp_path / "crash"
    first = capture.save_vmcore(core, str(dest), free_space=plenty, clock=clock())
    second = capture.save_vmcore(core, str(dest), free_space=plenty, clock=clock())
    assert (os.path.basename(first["path"]), os.path.basename(second["path"])) == (STAMP, STAMP + "-1")
    assert capture.complete_dumps(str(dest)) == [STAMP, STAMP + "-1"]


def test_unreadable_log_is_explained_and_the_vmcore_kept(tmp_path, no_tools):
    src = tmp_path / "vmcore"
    make_source(src, "DZD")
    report = capture.save_vmcore(str(src), str(tmp_path / "crash"), free_space=plenty, clock=clock())
    assert report["dmesg_source"] == "none" and "not an ELF core" in report["dmesg_error"]
    final = report["path"]
    assert open(os.path.join(final, "dmesg.txt")).read().startswith("the kernel log could not be read from %s: " % src)
    assert open(os.path.join(final, "vmcore"), "rb").read() == src.read_bytes()


@pytest.fixture
def mdf(no_tools, tmp_path, monkeypatch):
    """The fake makedumpfile on PATH (tests/unit/fake_tools.py); returns its call log."""
    fake_tools.install_makedumpfile(no_tools)
    log = tmp_path / "mdf.log"
    monkeypatch.setenv("FAKE_MDF_LOG", str(log))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_makedumpfile_used_when_installed(tmp_path, core, mdf):
    report = capture.save_vmcore(core, str(tmp_path / "crash"), dump_level=17, free_space=plenty, clock=clock())
    out = os.path.join(report["path"], "vmcore")
    work = os.path.join(str(tmp_path / "crash"), STAMP + ".incomplete")
    # Probed first; lzo is the best this build has (Debian bookworm's 1.7.2: lzo only).
    assert mdf() == [["-v"], ["-l", "-d", "17", core, os.path.join(work, "vmcore")],
                     ["--dump-dmesg", core, os.path.join(work, ".dmesg.makedumpfile")]]
    assert fake_tools.rebuild_fake_dump(open(out, "rb").read()) == open(core, "rb").read()
    assert report["method"] == "makedumpfile" and report["dump_level"] == 17 and report["compression"] == "lzo"
    assert report["makedumpfile_version"] == "1.7.2" and report["compression_note"] is None
    assert report["dmesg_source"] == "makedumpfile"
    # makedumpfile's log file is gone; capture-dmesg.txt is the capture kernel's own log
    assert sorted(os.listdir(report["path"])) == ["capture-dmesg.txt", "dmesg.txt", "vmcore"]
    assert "sysrq: Trigger a crash" in open(os.path.join(report["path"], "dmesg.txt")).read()


@pytest.mark.parametrize("features, wanted, flag, name, note", [
    ("lzo,snappy,zstd", "auto", "-z", "zstd", None),
    ("", "auto", "-c", "zlib", None),
    ("lzo", "zstd", "-l", "lzo", "this makedumpfile has no zstd support (it has lzo, zlib)"),
    ("lzo,snappy", "snappy", "-p", "snappy", None),
    ("lzo", "none", None, "none", None),
])
def test_compression_follows_what_the_build_has(tmp_path, core, mdf, monkeypatch, features, wanted, flag, name, note):
    monkeypatch.setenv("FAKE_MDF_FEATURES", features)
    report = capture.save_vmcore(core, str(tmp_path / "crash"), free_space=plenty, clock=clock(), compression=wanted)
    dump_call = mdf()[1]
    assert dump_call[0] == flag if flag else dump_call[0] == "-d"
    assert (report["compression"], report["compression_note"]) == (name, note)


def test_makedumpfile_stopped_before_the_disk_fills(tmp_path, core, mdf, monkeypatch):
    monkeypatch.setenv("FAKE_MDF_SLOW", "30")  # killed long before
    answers = iter([1 << 30])  # enough to start; then the disk is full while it writes

    def free(path):
        return next(answers, 1 << 20)
    dest = tmp_path / "crash"
    with pytest.raises(capture.CaptureError, match=r"makedumpfile was stopped after writing \d+ bytes with 1048576 bytes left"):
        capture.save_vmcore(core, str(dest), free_space=free, clock=clock(), min_free=8 << 20)
    assert os.listdir(str(dest)) == []  # no sparse copy attempted: it would need more room still


def test_makedumpfile_out_of_space_by_itself(tmp_path, core, mdf, monkeypatch):
    monkeypatch.setenv("FAKE_MDF_FAIL", "1")
    monkeypatch.setenv("FAKE_MDF_MESSAGE", "write_buffer: Can't write the dump file(/var/crash/x). No space left on device")
    dest = tmp_path / "crash"
    with pytest.raises(capture.CaptureError, match="not enough space"):
        capture.save_vmcore(core, str(dest), free_space=plenty, clock=clock(), min_free=0)
    assert os.listdir(str(dest)) == []


def test_makedumpfile_refused_before_writing_without_room(tmp_path, core, mdf):
    with pytest.raises(capture.CaptureError, match="not enough space"):
        capture.save_vmcore(core, str(tmp_path / "crash"), free_space=lambda p: 70 << 20, clock=clock())
    assert [call[0] for call in mdf()] == ["-v"]


def test_makedumpfile_failing_falls_back_in_auto_and_fails_in_always(tmp_path, core, mdf, monkeypatch):
    monkeypatch.setenv("FAKE_MDF_FAIL", "3")
    report = capture.save_vmcore(core, str(tmp_path / "a"), free_space=plenty, clock=clock())
    assert report["method"] == "sparse-copy" and report["compression"] is None
    assert "exited 3: makedumpfile: unsupported kernel" in report["makedumpfile_error"]
    assert open(os.path.join(report["path"], "vmcore"), "rb").read() == open(core, "rb").read()
    assert report["dmesg_source"] == "fleetboot"
    with pytest.raises(capture.CaptureError, match="exited 3"):
        capture.save_vmcore(core, str(tmp_path / "b"), makedumpfile="always", free_space=plenty, clock=clock())
    assert os.listdir(str(tmp_path / "b")) == []
    report = capture.save_vmcore(core, str(tmp_path / "c"), makedumpfile="never", free_space=plenty, clock=clock())
    assert report["method"] == "sparse-copy" and report["makedumpfile_error"] is None


def test_version_output_parsed():
    text = ("makedumpfile: version 1.7.5 (released on 21 Mar 2024)\nlzo\tenabled\nsnappy\tdisabled\n"
            "zstd\tenabled\n\n")
    assert makedumpfile.parse_version_output(text) == {"version": "1.7.5", "compressions": ["zstd", "lzo", "zlib"]}
    assert makedumpfile.parse_version_output("makedumpfile: version 1.6.7 (released on 16 Jan 2020)\n") == {
        "version": "1.6.7", "compressions": ["zlib"]}


def test_makedumpfile_always_without_it(tmp_path, core, no_tools):
    with pytest.raises(capture.CaptureError, match="makedumpfile is not installed"):
        capture.save_vmcore(core, str(tmp_path / "crash"), makedumpfile="always", clock=clock())


def test_vmcore_dmesg_failing_falls_back_to_our_reader(tmp_path, core, no_tools):
    fake_tool(no_tools, "vmcore-dmesg", "exit 1\n")
    report = capture.save_vmcore(core, str(tmp_path / "crash"), free_space=plenty, clock=clock())
    assert report["dmesg_source"] == "fleetboot" and report["dmesg_error"] == "vmcore-dmesg exited 1"
    assert "sysrq: Trigger a crash" in open(os.path.join(report["path"], "dmesg.txt")).read()


def test_keep_prunes_the_oldest_complete_dumps_only(tmp_path, core, no_tools):
    dest = tmp_path / "crash"
    for name in ("2025-01-01-00:00:00", "2025-06-01-00:00:00", "2026-01-01-00:00:00", "2024-01-01-00:00:00.incomplete",
                 "notes"):
        (dest / name).mkdir(parents=True)
    report = capture.save_vmcore(core, str(dest), keep=2, free_space=plenty, clock=clock())
    assert report["pruned"] == ["2025-01-01-00:00:00", "2025-06-01-00:00:00"]
    assert sorted(os.listdir(str(dest))) == ["2024-01-01-00:00:00.incomplete", "2026-01-01-00:00:00", STAMP, "notes"]
    # A clock set in the past must not let the new dump prune itself.
    report = capture.save_vmcore(core, str(dest), keep=1, free_space=plenty, clock=clock(T0 - 10 ** 9))
    assert os.path.basename(report["path"]) in os.listdir(str(dest))
    assert capture.complete_dumps(str(dest)) == [os.path.basename(report["path"])]


@pytest.mark.parametrize("kwargs, message", [
    ({"keep": 0}, "keep must be at least 1"),
    ({"dump_level": 32}, "from 0 to 31"),
    ({"makedumpfile": "sometimes"}, "makedumpfile must be one of"),
])
def test_bad_arguments(tmp_path, core, kwargs, message):
    with pytest.raises(capture.CaptureError, match=message):
        capture.save_vmcore(core, str(tmp_path / "crash"), **kwargs)


def test_refuses_outside_a_capture_kernel(tmp_path):
    with pytest.raises(capture.CaptureError, match="not running in a capture kernel"):
        capture.save_vmcore(str(tmp_path / "proc-vmcore"), str(tmp_path / "crash"))
    assert not (tmp_path / "crash").exists()


# ---- CLI --------------------------------------------------------------------------------------

def test_cli_save_vmcore_json_and_dmesg(tmp_path, core, no_tools):
    out, err = io.StringIO(), io.StringIO()
    dest = str(tmp_path / "crash")
    rc = cli.main(["save-vmcore", "--vmcore", core, "--dest", dest, "--makedumpfile", "never", "--keep", "3", "--json"],
                  out=out, err=err)
    assert (rc, err.getvalue()) == (0, "")
    report = json.loads(out.getvalue())
    assert report["method"] == "sparse-copy" and os.path.isdir(report["path"])
    out = io.StringIO()
    assert cli.main(["dmesg", "--vmcore", core], out=out, err=err) == 0
    assert out.getvalue() == kernel_log(core)["dmesg"]


def test_cli_errors_are_one_line(tmp_path):
    err = io.StringIO()
    assert cli.main(["save-vmcore", "--vmcore", str(tmp_path / "none")], out=io.StringIO(), err=err) == 1
    assert err.getvalue().count("\n") == 1 and "not running in a capture kernel" in err.getvalue()
    err = io.StringIO()
    (tmp_path / "junk").write_bytes(b"\x7fELF" + bytes(100))
    assert cli.main(["dmesg", "--vmcore", str(tmp_path / "junk")], out=io.StringIO(), err=err) == 1
    assert err.getvalue().startswith("fleetboot-kexec dmesg: ") and err.getvalue().count("\n") == 1
