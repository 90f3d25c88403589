# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install the loader package on the host: python3 -c <this> DEST write|check < bundle.json.

The bundle maps relative paths to file contents (the collection's module_utils/kexec, read on
the controller). Only files whose content or mode differ are written, each atomically; .py files
the bundle no longer has are removed. One module-less round trip instead of a copy per file.
Prints {"changed": [...], "removed": [...]}; with `check` nothing is written.
"""

from __future__ import absolute_import, division, print_function

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
    return {"changed": changed, "removed": removed}


def main():
    dest, mode = sys.argv[1], sys.argv[2]
    result = sync(dest, json.load(sys.stdin), mode == "write")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
