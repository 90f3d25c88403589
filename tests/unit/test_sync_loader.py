"""The kdump role's loader installer (roles/kdump/files/sync_loader.py), run as the role runs it:
`python3 -c <script> DEST write|check` with the JSON bundle on stdin."""

import importlib.util
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "roles", "kdump", "files", "sync_loader.py")


def sync(dest, bundle, mode="write"):
    with open(SCRIPT) as f:
        code = f.read()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([sys.executable, "-c", code, str(dest), mode], input=json.dumps(bundle),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env=env, check=True)
    return json.loads(proc.stdout), proc.stderr


def bytecode(dest, rel):
    return importlib.util.cache_from_source(os.path.join(str(dest), rel))


def test_writes_what_differs_and_compiles_it(tmp_path):
    dest = tmp_path / "kexec"
    bundle = {"__init__.py": "", "core/plan.py": "X = 1\n"}
    result, err = sync(dest, bundle)
    assert result == {"changed": ["__init__.py", "core/plan.py"], "removed": []} and err == ""
    assert (dest / "core" / "plan.py").read_text() == "X = 1\n"
    assert oct((dest / "core" / "plan.py").stat().st_mode & 0o777) == "0o644"
    for rel in bundle:
        assert os.path.exists(bytecode(dest, rel)), rel

    # Nothing differs: nothing written, the bytecode left as it was.
    before = os.stat(bytecode(dest, "core/plan.py")).st_mtime_ns
    assert sync(dest, bundle)[0] == {"changed": [], "removed": []}
    assert os.stat(bytecode(dest, "core/plan.py")).st_mtime_ns == before


def test_a_same_size_rewrite_gets_new_bytecode(tmp_path):
    # Bytecode keys on the source's mtime (whole seconds) and size: a rewrite in the same second
    # with the same size must still be recompiled, or the old code would run.
    dest = tmp_path / "kexec"
    sync(dest, {"m.py": "X = 1\n"})
    sync(dest, {"m.py": "X = 2\n"})
    # What an import would run: the bytecode, which the source's stat says is fresh.
    spec = importlib.util.spec_from_file_location("m", str(dest / "m.py"))
    loaded = {}
    exec(spec.loader.get_code("m"), loaded)  # pylint: disable=exec-used
    assert loaded["X"] == 2


def test_removed_sources_go_and_check_mode_writes_nothing(tmp_path):
    dest = tmp_path / "kexec"
    sync(dest, {"a.py": "A = 1\n", "b.py": "B = 1\n"})
    assert os.path.exists(bytecode(dest, "b.py"))
    result, dummy = sync(dest, {"a.py": "A = 2\n"}, mode="check")
    assert result == {"changed": ["a.py"], "removed": ["b.py"]}
    assert (dest / "a.py").read_text() == "A = 1\n" and (dest / "b.py").exists()
    result, dummy = sync(dest, {"a.py": "A = 2\n"})
    assert result == {"changed": ["a.py"], "removed": ["b.py"]}
    assert not (dest / "b.py").exists()
    # Its bytecode goes with it, the kept file's stays.
    assert not os.path.exists(bytecode(dest, "b.py")) and os.path.exists(bytecode(dest, "a.py"))


def test_bytecode_of_removed_sources_goes_whatever_the_tag(tmp_path):
    dest = tmp_path / "kexec"
    sync(dest, {"a.py": "A = 1\n", "ab.py": "AB = 1\n"})
    cache = dest / "__pycache__"
    for name in ("a.cpython-39.pyc", "a.cpython-39.opt-1.pyc", "ab.cpython-39.pyc"):
        (cache / name).write_bytes(b"")
    sync(dest, {"ab.py": "AB = 1\n"})
    assert sorted(os.listdir(str(cache))) == sorted(["ab.cpython-39.pyc", os.path.basename(bytecode(dest, "ab.py"))])


def test_a_file_that_does_not_compile_is_installed_and_reported_on_stderr(tmp_path):
    dest = tmp_path / "kexec"
    result, err = sync(dest, {"bad.py": "def (:\n", "good.py": "G = 1\n"})
    assert result["changed"] == ["bad.py", "good.py"]
    assert (dest / "bad.py").exists() and os.path.exists(bytecode(dest, "good.py"))
    assert "could not be compiled to bytecode under %s" % dest in err
