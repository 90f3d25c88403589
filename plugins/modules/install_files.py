#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: install_files
short_description: Install (or remove) a set of small files and their directories in one module run
version_added: 0.2.0
description:
  - Makes each directory exist with its mode and owner, then each file hold exactly the given
    content with its mode and owner. A file is written only when its content differs, atomically
    (a temporary file in the same directory, renamed over the old one, keeping its SELinux context);
    modes and owners are corrected where they differ.
  - The C(fleetboot.kexec.kdump) role installs its command, configuration, systemd units, udev rule
    and GRUB drop-in with it. Render the content on the controller (the P(ansible.builtin.template#lookup)
    lookup); one module run handles all of them, where M(ansible.builtin.template) costs two per file
    on every run, changed or not.
  - O(remove) takes files and whole directories away, as the role does when kdump is turned off.
author:
  - fleetboot.kexec developers (@fleetboot)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    support: full
    platforms: posix
  check_mode:
    support: full
    details:
      - Reports what would change (RV(changed_paths)) and writes or removes nothing.
  diff_mode:
    support: full
    details:
      - Shows each changed file's old and new content, changed modes and owners, and what goes.
options:
  remove:
    description:
      - Paths to remove first - files, symbolic links, or directories with everything in them. A path that
        does not exist is no change.
      - A path may not also be in O(directories) or O(files).
    type: list
    elements: path
    default: []
  directories:
    description:
      - Directories to create when missing (with missing parents, mode V(0755)); existing ones keep
        their content and get O(directories[].mode) and owner.
      - Handled before O(files), so a file may go into a directory created here.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the directory.
        type: path
        required: true
      mode:
        description: Its permissions, as an octal string.
        type: str
        default: "0755"
      owner:
        description: User that owns it; left as it is when not given.
        type: str
      group:
        description: Group that owns it; left as it is when not given.
        type: str
  files:
    description:
      - Files to install. Their directories must exist, or be in O(directories).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: The whole content of the file, as text (written as UTF-8).
        type: str
        required: true
      mode:
        description: Its permissions, as an octal string.
        type: str
        default: "0644"
      owner:
        description: User that owns it; left as it is (or root's, for a new file) when not given.
        type: str
      group:
        description: Group that owns it; left as it is when not given.
        type: str
notes:
  - Needs the rights to write where the paths are, and root to set an owner (C(become=true)).
  - In the action group C(fleetboot.kexec.kexec) with every module of the collection. Defaults set
    for it with C(module_defaults) reach all of them, so give only options that all of them accept.
  - Every path is checked before anything is written; a relative path, a path given twice, a file
    path that is a directory, a directory path that is a file, a file whose directory neither exists
    nor is in O(directories), and V(/) in O(remove) fail the task with nothing changed.
  - What the file system refuses later (a read-only mount, a file where a parent directory should be)
    fails the task naming the path, with RV(changed_paths) listing what was done before it.
seealso:
  - module: ansible.builtin.template
  - module: ansible.builtin.copy
"""

EXAMPLES = r"""
- name: Install a command and its systemd unit
  fleetboot.kexec.install_files:
    directories:
      - path: /etc/myservice
    files:
      - path: /usr/local/sbin/myservice
        content: "{{ lookup('ansible.builtin.template', 'myservice.sh.j2') }}"
        mode: "0755"
      - path: /etc/systemd/system/myservice.service
        content: "{{ lookup('ansible.builtin.template', 'myservice.service.j2') }}"
  become: true
  register: installed

- name: Reload systemd when the unit changed
  ansible.builtin.systemd_service:
    daemon_reload: true
  become: true
  when: "'/etc/systemd/system/myservice.service' in installed.changed_paths"
"""

RETURN = r"""
changed_paths:
  description:
    - The paths that were (in check mode, would be) removed, created or changed, in the order handled.
  returned: always
  type: list
  elements: str
  sample: [/etc/myservice, /etc/systemd/system/myservice.service]
"""

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

# What the diff shows of a file's old content: more is not text a human compares.
DIFF_LIMIT = 64 * 1024


def file_args(entry):
    """The attribute set AnsibleModule.set_fs_attributes_if_different expects."""
    return {"path": entry["path"], "mode": entry["mode"], "owner": entry["owner"], "group": entry["group"],
            "secontext": [None, None, None, None], "attributes": None}


def refusal(remove, directories, files):
    """Why the request cannot be carried out as given, or None; checked before anything is written."""
    seen = set()
    planned = set(os.path.normpath(d["path"]) for d in directories)
    gone = [{"path": path} for path in remove]
    for kind, entries in (("removed", gone), ("directory", directories), ("file", files)):
        for entry in entries:
            path = entry["path"]
            if not os.path.isabs(path):
                return "%s path %r is not absolute: give the full path" % (kind, path)
            normal = os.path.normpath(path)
            if normal in seen:
                return "%s is given twice: give each path once" % path
            seen.add(normal)
            if kind == "removed" and normal == "/":
                return "/ is in remove: name the files and directories to remove"
            if kind == "directory" and os.path.lexists(path) and not os.path.isdir(path):
                return "%s should be a directory but is a file: remove or rename it first" % path
            if kind == "file" and os.path.isdir(path):
                return "%s should be a file but is a directory: remove or rename it first" % path
            parent = os.path.dirname(normal)
            if kind == "file" and not os.path.isdir(parent) and parent not in planned:
                return "cannot write %s: its directory %s does not exist; add it to directories" % (path, parent)
    return None


def read_old(path):
    """The bytes at ``path``, or None when there is no file."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except (IOError, OSError):
        return None


def text_for_diff(data):
    if data is None:
        return ""
    if len(data) > DIFF_LIMIT:
        return "(%d bytes, not shown)\n" % len(data)
    return data.decode("utf-8", "replace")


def remove_path(module, path, diffs):
    """Remove a file, link or directory tree; True when there was one."""
    if not os.path.lexists(path):
        return False
    kind = "directory" if os.path.isdir(path) and not os.path.islink(path) else "file"
    diffs.append({"before_header": path, "after_header": path, "before": {"state": kind}, "after": {"state": "absent"}})
    if not module.check_mode:
        if kind == "directory":
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return True


def install_directory(module, entry, diffs):
    """Create or correct one directory; True when it changed."""
    path = entry["path"]
    exists = os.path.isdir(path)
    if not exists:
        diffs.append({"before_header": path, "after_header": path, "before": {"state": "absent"},
                      "after": {"state": "directory"}})
        if module.check_mode:
            return True
        os.makedirs(path)
    diff = {"before": {"path": path}, "after": {"path": path}}
    changed = module.set_fs_attributes_if_different(file_args(entry), not exists, diff)
    if exists and changed:
        diffs.append(diff)
    return changed


def install_file(module, entry, diffs):
    """Write or correct one file; True when it changed."""
    path = entry["path"]
    data = entry["content"].encode("utf-8")
    old = read_old(path)
    rewrite = old != data
    if rewrite:
        diffs.append({"before_header": path, "after_header": path,
                      "before": text_for_diff(old), "after": text_for_diff(data)})
        # In check mode nothing is written, and a new file (its directory perhaps only planned) has
        # no attributes to compare.
        if module.check_mode:
            return True
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            # Renamed over the old file: a reader sees the old or the new content, never half.
            module.atomic_move(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    diff = {"before": {"path": path}, "after": {"path": path}}
    changed = module.set_fs_attributes_if_different(file_args(entry), rewrite, diff)
    if changed and not rewrite:
        diffs.append(diff)
    return changed


def main():
    entry_spec = dict(path=dict(type="path", required=True), owner=dict(type="str"), group=dict(type="str"))
    module = AnsibleModule(
        argument_spec=dict(
            remove=dict(type="list", elements="path", default=[]),
            directories=dict(type="list", elements="dict", default=[],
                             options=dict(entry_spec, mode=dict(type="str", default="0755"))),
            files=dict(type="list", elements="dict", default=[],
                       options=dict(entry_spec, content=dict(type="str", required=True),
                                    mode=dict(type="str", default="0644"))),
        ),
        supports_check_mode=True,
    )
    remove, directories, files = module.params["remove"], module.params["directories"], module.params["files"]
    problem = refusal(remove, directories, files)
    if problem:
        module.fail_json(msg=problem, changed_paths=[])
    changed_paths, diffs = [], []
    path = None
    try:
        for path in remove:
            if remove_path(module, path, diffs):
                changed_paths.append(path)
        for entry in directories:
            path = entry["path"]
            if install_directory(module, entry, diffs):
                changed_paths.append(path)
        for entry in files:
            path = entry["path"]
            if install_file(module, entry, diffs):
                changed_paths.append(path)
    except (IOError, OSError) as err:
        # What the file system refused (a read-only mount, a file where a parent directory should be):
        # named, with what was already done, instead of a traceback.
        module.fail_json(msg="%s: %s; changed before that: %s" % (path, err.strerror or err, ", ".join(changed_paths) or "nothing"),
                         changed=bool(changed_paths), changed_paths=changed_paths)
    result = {"changed": bool(changed_paths), "changed_paths": changed_paths}
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
