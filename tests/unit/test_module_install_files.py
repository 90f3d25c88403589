"""install_files module: its main() run in-process on files under tmp_path."""

import json
import os
import stat

import pytest

from ansible_collections.fleetboot.kexec.plugins.modules import install_files

from tests.unit.module_args import patch_module_args


def run(capsys, check=False, diff=False, **args):
    if check:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    capsys.readouterr()
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            install_files.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    assert bool(result.get("failed")) == (exc.value.code != 0), out
    return result


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def read(path):
    with open(path) as f:
        return f.read()


def request(tmp_path):
    conf = str(tmp_path / "etc" / "svc")
    return {
        "directories": [{"path": conf}, {"path": str(tmp_path / "dumps"), "mode": "0700"}],
        "files": [{"path": conf + "/svc.conf", "content": "a = 1\n"},
                  {"path": str(tmp_path / "svc.sh"), "content": "#!/bin/sh\necho hi\n", "mode": "0755"}],
    }


def test_creates_directories_and_files_then_changes_nothing(capsys, tmp_path):
    args = request(tmp_path)
    res = run(capsys, **args)
    assert res["changed"] is True
    assert res["changed_paths"] == [str(tmp_path / "etc" / "svc"), str(tmp_path / "dumps"),
                                    str(tmp_path / "etc" / "svc" / "svc.conf"), str(tmp_path / "svc.sh")]
    assert read(str(tmp_path / "etc" / "svc" / "svc.conf")) == "a = 1\n"
    assert read(str(tmp_path / "svc.sh")) == "#!/bin/sh\necho hi\n"
    assert mode(str(tmp_path / "svc.sh")) == 0o755 and mode(str(tmp_path / "etc" / "svc" / "svc.conf")) == 0o644
    assert mode(str(tmp_path / "dumps")) == 0o700 and mode(str(tmp_path / "etc" / "svc")) == 0o755
    again = run(capsys, **request(tmp_path))
    assert again["changed"] is False and again["changed_paths"] == []
    # No temporary file is left beside what was written.
    assert sorted(os.listdir(str(tmp_path / "etc" / "svc"))) == ["svc.conf"]


def test_rewrites_only_what_differs_and_fixes_modes(capsys, tmp_path):
    run(capsys, **request(tmp_path))
    conf = str(tmp_path / "etc" / "svc" / "svc.conf")
    before = os.stat(conf).st_ino
    os.chmod(str(tmp_path / "svc.sh"), 0o600)
    os.chmod(str(tmp_path / "dumps"), 0o755)
    args = request(tmp_path)
    res = run(capsys, diff=True, **args)
    assert res["changed_paths"] == [str(tmp_path / "dumps"), str(tmp_path / "svc.sh")]
    assert mode(str(tmp_path / "svc.sh")) == 0o755 and mode(str(tmp_path / "dumps")) == 0o700
    assert os.stat(conf).st_ino == before  # untouched
    assert [d["after"]["mode"] for d in res["diff"]] == ["0700", "0755"]

    args["files"][0]["content"] = "a = 2\n"
    res = run(capsys, diff=True, **args)
    assert res["changed_paths"] == [conf] and read(conf) == "a = 2\n"
    assert res["diff"] == [{"before_header": conf, "after_header": conf, "before": "a = 1\n", "after": "a = 2\n"}]


def test_check_mode_reports_and_writes_nothing(capsys, tmp_path):
    res = run(capsys, check=True, diff=True, **request(tmp_path))
    assert res["changed"] is True and len(res["changed_paths"]) == 4
    assert os.listdir(str(tmp_path)) == []
    conf = str(tmp_path / "etc" / "svc" / "svc.conf")
    assert {"before_header": conf, "after_header": conf, "before": "", "after": "a = 1\n"} in res["diff"]

    run(capsys, **request(tmp_path))
    args = request(tmp_path)
    args["files"][0]["content"] = "a = 3\n"
    args["files"][1]["mode"] = "0700"
    res = run(capsys, check=True, **args)
    assert res["changed_paths"] == [conf, str(tmp_path / "svc.sh")]
    assert read(conf) == "a = 1\n" and mode(str(tmp_path / "svc.sh")) == 0o755


@pytest.mark.parametrize("mutate, message", [
    (lambda a, t: a["files"].append({"path": "relative.conf", "content": "x"}), "file path 'relative.conf' is not absolute"),
    (lambda a, t: a["files"].append(dict(a["files"][0])), "is given twice"),
    (lambda a, t: a["files"].append({"path": str(t), "content": "x"}), "should be a file but is a directory"),
    (lambda a, t: (t / "afile").write_text("x") and a["directories"].append({"path": str(t / "afile")}),
     "should be a directory but is a file"),
])
def test_bad_requests_fail_before_anything_is_written(capsys, tmp_path, mutate, message):
    args = request(tmp_path)
    mutate(args, tmp_path)
    res = run(capsys, **args)
    assert res["failed"] and message in res["msg"], res
    assert not (tmp_path / "etc").exists() and not (tmp_path / "svc.sh").exists()


def test_missing_directory_of_a_file_is_named(capsys, tmp_path):
    path = str(tmp_path / "nowhere" / "x.conf")
    res = run(capsys, files=[{"path": str(tmp_path / "first.conf"), "content": "x"}, {"path": path, "content": "x"}])
    assert res["failed"] and "its directory %s does not exist" % (tmp_path / "nowhere") in res["msg"], res
    assert os.listdir(str(tmp_path)) == []


def test_remove_takes_files_links_and_trees_away(capsys, tmp_path):
    run(capsys, **request(tmp_path))
    os.symlink(str(tmp_path / "svc.sh"), str(tmp_path / "link"))
    gone = [str(tmp_path / "etc"), str(tmp_path / "svc.sh"), str(tmp_path / "link"), str(tmp_path / "never-there")]
    res = run(capsys, check=True, remove=gone)
    assert res["changed_paths"] == gone[:3] and (tmp_path / "etc" / "svc" / "svc.conf").exists()
    res = run(capsys, diff=True, remove=gone)
    assert res["changed_paths"] == gone[:3]
    assert sorted(os.listdir(str(tmp_path))) == ["dumps"]
    assert [d["before"] for d in res["diff"]] == [{"state": "directory"}, {"state": "file"}, {"state": "file"}]
    assert run(capsys, remove=gone)["changed"] is False


def test_remove_refuses_the_root_and_a_path_also_installed(capsys, tmp_path):
    res = run(capsys, remove=["/"])
    assert res["failed"] and "/ is in remove" in res["msg"]
    args = request(tmp_path)
    args["remove"] = [str(tmp_path / "svc.sh")]
    res = run(capsys, **args)
    assert res["failed"] and "is given twice" in res["msg"] and os.listdir(str(tmp_path)) == []


def test_what_the_file_system_refuses_is_named_with_what_was_done(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    first, blocked = str(tmp_path / "made"), str(tmp_path / "afile" / "sub")
    res = run(capsys, directories=[{"path": first}, {"path": blocked}])
    assert res["failed"] and res["changed_paths"] == [first], res
    assert res["msg"].startswith(blocked + ": Not a directory; changed before that: " + first), res["msg"]
