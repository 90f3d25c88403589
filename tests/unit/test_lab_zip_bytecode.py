"""The lab image's bytecode cache for zip imports (lab/recipe/lab_zip_bytecode.py), run in fresh
interpreters the way AnsiballZ imports a module: from a zip under a new temporary directory."""

import json
import marshal
import os
import subprocess
import sys
import zipfile

import pytest

# The hook serves root only (code from the cache runs as whoever imports it); the lab's tests run as root.
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the bytecode cache is used by root only")

HOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "lab", "recipe", "lab_zip_bytecode.py")

MODULE = b"def where():\n    return VALUE\n\nVALUE = %d\n"

PROBE = r"""
import json, os, sys
if len(sys.argv) > 4:  # a user other than root, as far as the hook can tell
    os.geteuid = lambda: int(sys.argv[4])
ns = {}
src = open(sys.argv[1]).read().replace('"/var/cache/lab-zip-bytecode"', repr(sys.argv[2]))
assert repr(sys.argv[2]) in src, "the hook's cache directory is not where this test expects it"
exec(compile(src, sys.argv[1], "exec"), ns)
sys.path.insert(0, sys.argv[3])
import payload_mod
code_file = payload_mod.where.__code__.co_filename
print(json.dumps({"value": payload_mod.VALUE, "code_file": code_file}))
"""


def _zip(directory, value):
    os.makedirs(directory)
    path = os.path.join(directory, "ansible_x_payload.zip")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("payload_mod.py", MODULE % value)
    return path


def _run(cache, zip_path, euid=None):
    extra = [] if euid is None else [str(euid)]
    out = subprocess.run([sys.executable, "-c", PROBE, HOOK, cache, zip_path] + extra, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, check=True).stdout
    return json.loads(out)


def _poison(cache, value):
    """Overwrite the one cache entry with code that says ``value``: a run that prints it used the cache."""
    entry = os.path.join(cache, os.listdir(cache)[0])
    with open(entry, "wb") as f:
        f.write(marshal.dumps(compile(MODULE % value, "elsewhere.zip/payload_mod.py", "exec")))


def test_second_import_uses_the_cache_with_this_runs_file_name(tmp_path):
    cache = str(tmp_path / "cache")
    first = _run(cache, _zip(str(tmp_path / "run1"), 1))
    assert len(os.listdir(cache)) == 1
    second_zip = _zip(str(tmp_path / "run2"), 1)
    # The cached code would say VALUE 2 if it were used: proves the second run read the cache.
    _poison(cache, 2)
    second = _run(cache, second_zip)
    assert first["value"] == 1 and second["value"] == 2
    # The functions' filename is this run's zip, not the one the cache was written from.
    assert second["code_file"] == os.path.join(second_zip, "payload_mod.py")
    assert len(os.listdir(cache)) == 1


def test_changed_source_is_compiled_again(tmp_path):
    cache = str(tmp_path / "cache")
    assert _run(cache, _zip(str(tmp_path / "run1"), 1))["value"] == 1
    assert _run(cache, _zip(str(tmp_path / "run2"), 7))["value"] == 7
    assert len(os.listdir(cache)) == 2


def test_broken_cache_entry_or_unwritable_cache_falls_back_to_compiling(tmp_path):
    cache = str(tmp_path / "cache")
    _run(cache, _zip(str(tmp_path / "run1"), 3))
    entry = os.path.join(cache, os.listdir(cache)[0])
    with open(entry, "wb") as f:
        f.write(b"\xe3\x00")  # a truncated marshal stream
    assert _run(cache, _zip(str(tmp_path / "run2"), 3))["value"] == 3
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    assert _run(str(blocked / "cache"), _zip(str(tmp_path / "run3"), 4))["value"] == 4


def test_cache_others_may_write_to_or_a_user_other_than_root_is_never_read(tmp_path):
    cache = str(tmp_path / "cache")
    _run(cache, _zip(str(tmp_path / "run1"), 5))
    _poison(cache, 6)
    assert _run(cache, _zip(str(tmp_path / "run2"), 5))["value"] == 6  # root, root's 0755 directory
    os.chmod(cache, 0o777)
    assert _run(cache, _zip(str(tmp_path / "run3"), 5))["value"] == 5
    os.chmod(cache, 0o755)
    # nobody (euid 65534) compiles as usual: neither reads root's entry nor writes one.
    assert _run(cache, _zip(str(tmp_path / "run4"), 5), euid=65534)["value"] == 5
    assert _run(cache, _zip(str(tmp_path / "run5"), 8), euid=65534)["value"] == 8
    assert len(os.listdir(cache)) == 1
