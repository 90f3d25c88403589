#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kdump_crash
short_description: Crash a host on purpose and wait until its kdump vmcore is saved
version_added: 0.1.0
description:
  - Tests kdump end to end with a real kernel crash. The host must have a crash kernel loaded
    (C(/sys/kernel/kexec_crash_loaded) is 1, see the C(fleetboot.kexec.kdump) role); otherwise the
    task fails without touching the host, because a crash without a crash kernel would only hang
    the host or reboot it without a dump.
  - Lists the complete dumps already under O(path) and records the host's boot_id, then enables
    sysrq (C(/proc/sys/kernel/sysrq)), syncs the file systems and triggers C(echo c > /proc/sysrq-trigger)
    from a detached process, two seconds after the task's command returned.
  - Then waits until the host stops answering, (possibly) answers from the capture kernel (a new
    boot_id with C(/proc/vmcore)), and finally answers on a B(normal) boot (yet another boot_id, no
    C(/proc/vmcore)) with a new complete dump directory under O(path) holding a C(vmcore), or, when
    the capture kernel sent the dump to a dump server (the role's C(kdump_target=ssh)), a new entry
    in O(path)C(/captures.log) naming the dump on the server. Any other outcome fails the task with
    what was seen, including the capture's own error from C(captures.log).
  - This module is an action plugin; it runs on the controller and sends shell commands to the host.
author:
  - fleetboot.kexec developers (@fleetboot)
extends_documentation_fragment:
  - fleetboot.kexec.host
  - fleetboot.kexec.host.wait
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details:
      - Reads the boot_id, whether a crash kernel is loaded and the existing dumps; does not crash the host.
      - A host without a crash kernel gets a warning instead of a failure in check mode.
  diff_mode:
    support: none
options:
  path:
    description:
      - Directory the capture kernel saves dumps under, one sub-directory per crash holding C(vmcore)
        and C(dmesg.txt) (C(fleetboot-kexec save-vmcore --dest)). Directories whose name ends in
        C(.incomplete) do not count.
    type: str
    default: /var/crash
  timeout:
    description:
      - Seconds from the panic until the host must answer on a normal boot with the new dump saved.
      - Covers the capture kernel's boot (about 35 s in the project's emulated lab), writing the dump
        (the size of the RAM without filtering) and the reboot through the firmware.
    type: int
    default: 900
notes:
  - B(This crashes the host.) Services stop without a shutdown; unsynced data of running programs is lost.
  - The capture kernel reboots the host through the firmware, so the host comes back on what its boot
    loader boots by default.
seealso:
  - module: fleetboot.kexec.kexec_load
  - module: fleetboot.kexec.kexec_reboot
"""

EXAMPLES = r"""
- name: Crash the host and wait for the dump
  fleetboot.kexec.kdump_crash:
    path: /var/crash
    timeout: 1200
    connect_timeout: 10
  become: true
  register: crash

- name: Show where the dump is
  ansible.builtin.debug:
    msg: "{{ crash.vmcore }} ({{ crash.vmcore_size | human_readable }}), back after {{ crash.elapsed }} s"
"""

RETURN = r"""
crashed:
  description: Whether the crash was triggered.
  returned: always
  type: bool
  sample: true
old_boot_id:
  description: The host's boot_id before the crash.
  returned: once the host answered
  type: str
  sample: 5d2c9a4e-3f8b-4f2e-9d6a-2b1e7c0f4a11
release:
  description: Kernel release (C(uname -r)) that was crashed.
  returned: once the host answered
  type: str
  sample: 6.1.0-54-amd64
crash_loaded:
  description: Whether a crash kernel was loaded before the crash.
  returned: once the host answered
  type: bool
  sample: true
dumps_before:
  description: The complete dump directories under O(path) before the crash.
  returned: once the host answered
  type: list
  elements: str
  sample: ["/var/crash/2026-11-21-10:02:13"]
capture_boot_id:
  description:
    - boot_id of the capture kernel, when it was seen answering (with C(/proc/vmcore)). A capture kernel
      that saves the dump and reboots before SSH answers is not seen; the dump still proves it ran.
  returned: when the capture kernel answered
  type: str
  sample: 0b7e3f1c-8a2d-4c5e-b6f9-3d4e5a6b7c8d
capture_answered:
  description: Seconds from the panic until the capture kernel answered.
  returned: when the capture kernel answered
  type: float
  sample: 33.2
new_boot_id:
  description: boot_id of the normal boot the host came back on.
  returned: when the host came back on a normal boot
  type: str
  sample: 7a1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e
vmcore:
  description: Path of the new vmcore.
  returned: success
  type: str
  sample: /var/crash/2026-11-21-10:14:55/vmcore
vmcore_size:
  description: Size of the new vmcore in bytes.
  returned: success
  type: int
  sample: 2040109465
dmesg:
  description: Path of the crashed kernel's log saved beside the vmcore, or V(null) when there is none.
  returned: success
  type: str
  sample: /var/crash/2026-11-21-10:14:55/dmesg.txt
dump_dir:
  description: The new dump directory.
  returned: success
  type: str
  sample: /var/crash/2026-11-21-10:14:55
elapsed:
  description: Seconds from the panic until the host answered on a normal boot with the vmcore saved.
  returned: when the crash was triggered
  type: float
  sample: 131.5
downtime:
  description: Seconds from the first probe the host did not answer until it answered with the vmcore saved.
  returned: success
  type: float
  sample: 128.0
target:
  description:
    - Where the capture kernel put the dump, from its entry in O(path)C(/captures.log) (V(local) or V(ssh));
      absent when the capture wrote no entry (an older loader).
  returned: success
  type: str
  sample: ssh
dump_server:
  description: The dump server that took the dump (C(user@server:port)); then RV(vmcore) and RV(dump_dir) are paths on it.
  returned: when the dump went to a dump server
  type: str
  sample: root@10.0.2.2:22
remote_error:
  description: Why a dump meant for the dump server was saved locally (the capture kernel says it on its console too).
  returned: when the dump fell back to a local one
  type: str
  sample: "dump server root@10.0.2.2:22: ssh exited 255: ssh: connect to host 10.0.2.2 port 22: Connection refused (20 attempts in 60 s)"
capture_record:
  description: The capture's own report, as save-vmcore logged it in O(path)C(/captures.log) (method, compression, sizes, seconds...).
  returned: when the capture logged one
  type: dict
crash_loaded_after:
  description:
    - Whether a crash kernel is loaded again on the new boot (the C(fleetboot.kexec.kdump) role's unit loads
      one at boot when the memory is still reserved). The task warns when it is not.
  returned: success
  type: bool
  sample: true
"""
