# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install the loader package on the host: python3 -c <this> DEST write|check < bundle.json.

The bundle maps relative paths to file contents (the collection's module_utils/kexec, read on
the controller). Only files whose content or mode differ are written, each atomically; .py files
the bundle no longer has are removed, with their bytecode. One module-less round trip instead of
a copy per file. Then the host's own python3 compiles what is stale to bytecode (__pycache__), so
the first load at boot (the kdump unit) does not spend its time compiling the loader: importing it
from source costs more than the rest of a load. Prints {"changed": [...], "removed": [...]};
with `check` nothing is written.
"""

from __future__ import absolute_import, division, print_function

import compileall
import contextlib
import json
import os
import sys


def installed(dest):
    """{relative path: path} of the .py files under dest (__pycache__ left out)."""
    found = {}
    for root, dirs, files in os.walk(dest):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                found[os.path.relpath(path, dest)] = path
    return found


def same(path, data):
    try:
        with open(path, "rb") as f:
            return f.read() == data and (os.stat(path).st_mode & 0o7777) == 0o644
    except (IOError, OSError):
        return False


def sync(dest, wanted, write):
    have = installed(dest)
    changed = []
    for rel in sorted(wanted):
        data = wanted[rel].encode("utf-8")
        path = os.path.join(dest, rel)
        if same(path, data):
            continue
        changed.append(rel)
        if write:
            parent = os.path.dirname(path)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.chmod(path + ".tmp", 0o644)
            os.rename(path + ".tmp", path)
    removed = sorted(set(have) - set(wanted))
    if write:
        for rel in removed:
            os.unlink(have[rel])
            remove_bytecode(have[rel])
        compile_bytecode(dest, [os.path.join(dest, rel) for rel in changed])
    return {"changed": changed, "removed": removed}


def remove_bytecode(source):
    """Delete __pycache__/<name>.*.pyc of a removed source (every interpreter's tag: the host's
    python3 may have changed since). Python never imports them without the source, but they
    would stay in the installed tree forever."""
    cache = os.path.join(os.path.dirname(source), "__pycache__")
    module = os.path.splitext(os.path.basename(source))[0]
    try:
        names = os.listdir(cache)
    except OSError:
        return
    for name in names:
        # <module>.<tag>.pyc or <module>.<tag>.opt-N.pyc (importlib.util.cache_from_source);
        # a module name has no dot, so the first part is the module.
        parts = name.split(".")
        if parts[0] == module and parts[-1] == "pyc" and len(parts) in (3, 4):
            os.unlink(os.path.join(cache, name))


def compile_bytecode(dest, written):
    """Write __pycache__ bytecode for the files just ``written`` and for every other .py under
    dest whose bytecode is missing or stale.

    The written ones are compiled unconditionally: bytecode records the source's mtime in whole
    seconds and its size, so a same-size rewrite within a second would look fresh. Not reported
    as a change (it follows from the sources); a failure is not fatal (Python falls back to the
    source) and is printed to stderr for the role's log.
    """
    # compileall reports errors on stdout, which carries this script's JSON result.
    with contextlib.redirect_stdout(sys.stderr):
        ok = True
        for path in written:  # every one, even after a failure
            ok = compileall.compile_file(path, quiet=1, force=True) and ok
        ok = compileall.compile_dir(dest, quiet=1, force=False) and ok
    if not ok:
        sys.stderr.write("sync_loader: some loader files could not be compiled to bytecode under %s\n" % dest)


def main():
    dest, mode = sys.argv[1], sys.argv[2]
    result = sync(dest, json.load(sys.stdin), mode == "write")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
