#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kexec_reboot
short_description: Jump into the loaded kexec kernel and wait until the host answers on it
version_added: 0.1.0
description:
  - Reboots a Linux host into the kernel that is loaded for kexec (see M(fleetboot.kexec.kexec_load)),
    skipping firmware POST, then waits until the host answers again with a B(new boot_id) and
    verifies the kernel release and command line it came back with.
  - A drop-in for M(ansible.builtin.reboot) on Linux hosts. It accepts every option of
    M(ansible.builtin.reboot) (O(msg), O(reboot_command), O(boot_time_command), O(search_paths),
    O(pre_reboot_delay), O(post_reboot_delay), O(reboot_timeout), O(connect_timeout),
    O(test_command)) with the same meaning, so a task written for it runs unchanged with the
    module name switched; the differences are noted on each option.
  - The host-side part reads C(/sys/kernel/kexec_loaded), the boot_id, C(uname -r) and
    C(/proc/cmdline), sends O(msg) to the logged-in users, then starts the shutdown B(detached),
    so that it returns before the host goes down. On systemd hosts it runs C(systemctl kexec),
    which stops the services and unmounts the file systems first. On other init systems it runs
    the C(/etc/rc6.d/K*) stop scripts, syncs the file systems and calls
    C(reboot(LINUX_REBOOT_CMD_KEXEC)).
  - The controller-side part (an action plugin) never reports success before the host really went
    down and came back; success means the host answered with a boot_id other than the one it had
    before, O(boot_time_command) (when given) printed something new, and O(test_command) succeeded.
  - When no kexec image is loaded, or the host refuses the jump, the task fails without rebooting,
    unless O(fallback=cold), in which case the host is rebooted through the firmware and the task
    reports RV(method=cold) and the RV(reason).
  - A cold reboot is really cold. A kexec image that is still loaded is unloaded first (systemd
    would otherwise turn C(systemctl reboot) into a kexec) and the reboot runs with
    C(SYSTEMCTL_SKIP_AUTO_KEXEC=1).
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
      - Reports the boot_id, release and the method a real run would use; nothing is touched and
        no message is sent.
      - When no image is loaded and O(fallback=fail), check mode warns instead of failing, because
        a M(fleetboot.kexec.kexec_load) task before it loads nothing in check mode either.
  diff_mode:
    support: none
options:
  fallback:
    description:
      - What to do when no kexec image is loaded or the host refuses the jump (or a custom
        O(reboot_command) exits non-zero).
      - V(fail) fails the task and leaves the host running as it is.
      - V(cold) unloads any kexec image and reboots the host through the firmware; the task then
        reports RV(method=cold) and the RV(reason).
    type: str
    choices: [cold, fail]
    default: fail
  method:
    description:
      - V(auto) jumps with kexec when an image is loaded and applies O(fallback) otherwise.
      - V(cold) forces a firmware reboot, unloading any loaded kexec image first. The action plugin
        uses it to fall back when the host refuses the jump. O(reboot_command) does not apply to it.
    type: str
    choices: [auto, cold]
    default: auto
  msg:
    description:
      - Message written to the terminals of the users logged in on the host, as C(wall) does (the
        module runs C(wall), found in O(search_paths)), when the shutdown is scheduled; it is also
        logged to syslog.
      - Unlike M(ansible.builtin.reboot) it is sent with a custom O(reboot_command) too.
      - An empty string sends nothing. A host without C(wall) gets a warning, not a failure.
    type: str
    default: Reboot initiated by Ansible
  reboot_command:
    description:
      - Command that starts the reboot, with its arguments, run detached through C(/bin/sh -c) on
        the host after O(pre_reboot_delay). A command name without a C(/) is looked up in
        O(search_paths) only.
      - By default the module runs C(systemctl --no-block kexec) on systemd hosts (C(systemctl) found
        in O(search_paths)) and, on other init systems, the rc6 stop scripts, C(sync) and
        C(reboot(LINUX_REBOOT_CMD_KEXEC)); it then requires a loaded kexec image (see O(fallback)).
      - B(With a custom command the module cannot tell how the host rebooted.) It does not require a
        loaded image, reports RV(method=custom), and success still means a new boot_id, O(boot_time_command)
        and O(test_command) as usual; use O(expect_release) and O(expect_cmdline) to verify that the
        host came back on the kernel you loaded rather than through the firmware. A command that exits
        non-zero counts as a refused reboot (see O(fallback)).
      - Unlike M(ansible.builtin.reboot), O(pre_reboot_delay), O(post_reboot_delay) and O(msg) still
        apply with a custom command.
    type: str
  boot_time_command:
    description:
      - Command whose output identifies the current boot, run before the reboot and again once the host
        answers with a new boot_id; the task succeeds only when it succeeds and prints something other
        than before (it is retried until O(reboot_timeout) runs out). A check B(beside) the boot_id,
        which the module always compares (the boot_id is what M(ansible.builtin.reboot) reads by
        default, with C(cat /proc/sys/kernel/random/boot_id)).
      - Setting this to a command whose output changes at every run defeats the check.
      - By default only the boot_id is compared.
    type: str
  search_paths:
    description:
      - Directories searched on the host for the commands the module runs itself (a O(reboot_command)
        without a C(/), C(systemctl), C(wall)). Only these are searched; E(PATH) is ignored, as in
        M(ansible.builtin.reboot).
    type: list
    elements: str
    default: ['/sbin', '/bin', '/usr/sbin', '/usr/bin', '/usr/local/sbin']
  reboot_timeout:
    description:
      - Seconds to wait, from the moment the shutdown is triggered (after O(pre_reboot_delay)), for the
        host to go down and come back with a new boot_id (and a new O(boot_time_command) output).
      - As with M(ansible.builtin.reboot), O(test_command) then gets the same number of seconds again,
        so the task can take twice as long.
    type: int
    default: 600
  test_command:
    description:
      - Command run on the host once it answers with a new boot_id; the task succeeds only when it
        exits 0 (it is retried until O(reboot_timeout) runs out).
    type: str
    default: whoami
  pre_reboot_delay:
    description:
      - Seconds the host waits after the module returned before it starts the shutdown.
      - Exact seconds; M(ansible.builtin.reboot) rounds this down to whole minutes on Linux. Negative
        values count as 0.
    type: int
    default: 0
  post_reboot_delay:
    description:
      - Seconds to wait after the host answered with a new boot_id, before O(test_command) runs and
        the release and command line are checked. Negative values count as 0.
    type: int
    default: 0
  expect_release:
    description:
      - Kernel release (C(uname -r)) the host must run after the reboot, for example
        V(6.1.0-56-amd64). The task fails naming the expected and the found release otherwise.
    type: str
  expect_cmdline:
    description:
      - Items that must all appear in C(/proc/cmdline) after the reboot, each as a whole
        space-separated word (V(quiet), V(console=ttyS0)).
    type: list
    elements: str
notes:
  - If the kernel refuses C(reboot(LINUX_REBOOT_CMD_KEXEC)) at the very end of the shutdown (after the
    services stopped), the init system reboots through the firmware. O(expect_release) catches
    such a host coming back on the wrong kernel.
  - Whether the jump was refused is written to C(/run/fleetboot/kexec_reboot.json) on the host, so
    a refused jump fails (or falls back) at once instead of after O(reboot_timeout).
seealso:
  - module: fleetboot.kexec.kexec_load
  - module: ansible.builtin.reboot
  - ref: ansible_collections.fleetboot.kexec.docsite.kexec_upgrade
    description: The rolling kexec upgrade guide.
"""

EXAMPLES = r"""
- name: Jump into the loaded kernel and check that it is the new one
  fleetboot.kexec.kexec_reboot:
    expect_release: 6.1.0-56-amd64
  become: true

- name: A task written for ansible.builtin.reboot, with the module name switched
  fleetboot.kexec.kexec_reboot:
    msg: Rebooting into the new kernel for maintenance
    reboot_timeout: 900
    test_command: systemctl is-system-running --wait
  become: true

- name: Jump, or reboot through the firmware when kexec is not possible
  fleetboot.kexec.kexec_reboot:
    fallback: cold
    reboot_timeout: 900
    connect_timeout: 10
    pre_reboot_delay: 30
    expect_cmdline:
      - console=ttyS0
  become: true
  register: jump

- name: Show how long the host was away
  ansible.builtin.debug:
    msg: "{{ jump.old_release }} -> {{ jump.new_release }} by {{ jump.method }} in {{ jump.downtime }} s"

- name: Let another tool trigger the reboot, and verify where the host came back
  fleetboot.kexec.kexec_reboot:
    reboot_command: systemctl kexec
    boot_time_command: uptime --since
    expect_release: 6.1.0-56-amd64
  become: true
"""

RETURN = r"""
rebooted:
  description: Whether the host went down and came back with a new boot_id.
  returned: always
  type: bool
  sample: true
method:
  description:
    - How the host was (or in check mode would be) rebooted, V(kexec) or V(cold), or V(custom) when
      O(reboot_command) was given (the module cannot tell how such a command rebooted the host).
  returned: success, and failures after the shutdown was triggered
  type: str
  sample: kexec
reason:
  description: Why the host was rebooted cold instead of by kexec.
  returned: when RV(method=cold)
  type: str
  sample: no kexec image is loaded (/sys/kernel/kexec_loaded is 0)
elapsed:
  description: Seconds from triggering the shutdown to the end of the checks.
  returned: when the shutdown was triggered
  type: float
  sample: 23.4
downtime:
  description:
    - Seconds between the last answer with the old boot_id and the first answer with the new one.
  returned: when the host came back
  type: float
  sample: 11.2
old_boot_id:
  description: The host's boot_id before the reboot.
  returned: always, once the host answered
  type: str
  sample: 5d2c9a4e-3f8b-4f2e-9d6a-2b1e7c0f4a11
new_boot_id:
  description: The host's boot_id after the reboot.
  returned: when the host came back
  type: str
  sample: 0b7e3f1c-8a2d-4c5e-b6f9-3d4e5a6b7c8d
old_release:
  description: Kernel release (C(uname -r)) before the reboot.
  returned: always, once the host answered
  type: str
  sample: 6.1.0-54-amd64
new_release:
  description: Kernel release (C(uname -r)) after the reboot.
  returned: when the host came back
  type: str
  sample: 6.1.0-56-amd64
new_cmdline:
  description: The host's C(/proc/cmdline) after the reboot.
  returned: when the host came back
  type: str
  sample: console=ttyS0 root=/dev/vda rw
kexec_loaded:
  description: Whether a kexec image was loaded when the task started.
  returned: always, once the host answered
  type: bool
  sample: true
init:
  description: The init system whose shutdown runs, V(systemd) or V(sysv).
  returned: when the module ran
  type: str
  sample: systemd
announced:
  description: Whether O(msg) was sent to the logged-in users with C(wall).
  returned: when the shutdown was triggered
  type: bool
  sample: true
command:
  description: The shutdown steps the host runs (or would run in check mode), in order.
  returned: when the module ran
  type: list
  elements: str
  sample: ["systemctl --no-block kexec"]
"""

import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import syslog
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import KexecError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.syscalls import default_syscalls

BOOT_ID = "/proc/sys/kernel/random/boot_id"
KEXEC_LOADED = "/sys/kernel/kexec_loaded"
CMDLINE = "/proc/cmdline"
STATUS_DIR = "/run/fleetboot"
STATUS_FILE = STATUS_DIR + "/kexec_reboot.json"
RC6_DIR = "/etc/rc6.d"
# ansible.builtin.reboot's defaults, so that a task written for it means the same here.
DEFAULT_SEARCH_PATHS = ["/sbin", "/bin", "/usr/sbin", "/usr/bin", "/usr/local/sbin"]
DEFAULT_MSG = "Reboot initiated by Ansible"
# Seconds wall may take to write to every terminal; a hung tty must not hold up the reboot.
WALL_TIMEOUT = 10
# Seconds the detached child waits before the shutdown starts, so the SSH session returns first.
DETACH_SLEEP = 1.5

# <uapi/linux/reboot.h>: a cold reboot through the firmware (the kexec numbers live in the loader's
# one syscall table, module_utils/kexec/syscalls).
RB_AUTOBOOT = 0x01234567


class RebootError(Exception):
    """A reason not to reboot, worded for the user."""


def read_text(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except (IOError, OSError):
        return default


def host_state(root="/"):
    """What the host runs now: boot_id, release, cmdline and whether a kexec image is loaded."""
    def at(path):
        return os.path.join(root, path.lstrip("/"))
    return {
        "boot_id": read_text(at(BOOT_ID), ""),
        "release": platform.release(),
        "cmdline": read_text(at(CMDLINE), ""),
        "kexec_loaded": read_text(at(KEXEC_LOADED), "0") == "1",
    }


def find_command(name, search_paths=None):
    """Absolute path of `name` in `search_paths` only (PATH is ignored, as ansible.builtin.reboot
    does), or None. A name with a slash is taken as it is when it is executable."""
    if "/" in name:
        return name if os.access(name, os.X_OK) and not os.path.isdir(name) else None
    paths = DEFAULT_SEARCH_PATHS if search_paths is None else search_paths
    return shutil.which(name, path=os.pathsep.join(paths)) if paths else None


def init_system(root="/", search_paths=None):
    """'systemd' when systemd is PID 1 (its sd_booted() test) and systemctl is in search_paths,
    'sysv' otherwise."""
    if os.path.isdir(os.path.join(root, "run/systemd/system")) and find_command("systemctl", search_paths):
        return "systemd"
    return "sysv"


def resolve_reboot_command(command, search_paths=None):
    """`command` with its program (the first word after any NAME=value assignments) made absolute
    through search_paths; RebootError when it is not there."""
    words = command.strip().split(" ")
    at = 0
    while at < len(words) and ("=" in words[at] and "/" not in words[at].split("=", 1)[0]
                               or not words[at]):
        at += 1
    if at == len(words):
        raise RebootError("reboot_command %r names no command to run; the host was not rebooted" % command)
    program = find_command(words[at], search_paths)
    if program is None:
        where = "is not an executable file" if "/" in words[at] else \
            "is not in search_paths (%s)" % ", ".join(DEFAULT_SEARCH_PATHS if search_paths is None else search_paths)
        raise RebootError("reboot_command: %s %s on the host: give its absolute path, or add its "
                          "directory to search_paths; the host was not rebooted" % (words[at], where))
    words[at] = program
    return " ".join(words).strip()


def choose_method(method, fallback, kexec_loaded, custom=False):
    """(method, reason): 'kexec', 'cold' or 'custom' (a reboot_command the module cannot see
    into), and why cold; RebootError when the task must fail."""
    if method == "cold":
        return "cold", "a cold reboot was requested (method: cold)"
    if custom:
        return "custom", None
    if kexec_loaded:
        return "kexec", None
    reason = "no kexec image is loaded (%s is 0)" % KEXEC_LOADED
    if fallback == "cold":
        return "cold", reason
    raise RebootError("%s: load one first with fleetboot.kexec.kexec_load, or set fallback: cold to "
                      "reboot through the firmware instead; the host was not rebooted" % reason)


def announce(msg, search_paths=None, runner=subprocess.run):
    """Send `msg` to the logged-in users' terminals with wall, as `shutdown -r +N MSG` does for
    ansible.builtin.reboot. Returns (sent, warning): a missing or failing wall never stops the
    reboot, it only warns."""
    if not msg:
        return False, None
    wall = find_command("wall", search_paths)
    if wall is None:
        return False, "msg was not sent: no wall command in search_paths"
    try:
        proc = runner([wall], input=msg.encode("utf-8") + b"\n", stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, timeout=WALL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, "msg was not sent: %s: %s" % (wall, e)
    if proc.returncode != 0:
        said = proc.stdout.decode("utf-8", "replace").strip() if proc.stdout else ""
        return False, "msg was not sent: %s exited %d: %s" % (wall, proc.returncode, said or "no message")
    return True, None


def run_reboot_command(command, runner=subprocess.run):
    """A custom reboot_command, in the detached child. Returns why the reboot was refused (a
    non-zero exit), or None. A command killed by a signal was killed by the shutdown it started."""
    proc = runner(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT, check=False)
    if proc.returncode > 0:
        said = proc.stdout.decode("utf-8", "replace").strip() if proc.stdout else ""
        return "reboot_command %r failed (exit %d): %s" % (command, proc.returncode, said or "no message")
    return None


def rc6_scripts(rc6_dir=RC6_DIR):
    """The rc6 stop scripts in order, without the one that reboots (we do that ourselves)."""
    try:
        names = sorted(n for n in os.listdir(rc6_dir) if n.startswith("K"))
    except OSError:
        return []
    return [os.path.join(rc6_dir, n) for n in names
            if n.lstrip("K0123456789") not in ("reboot", "halt")]


def shutdown_steps(init, method, rc6_dir=RC6_DIR):
    """Human-readable shutdown steps for `init` and `method` (returned as `command`)."""
    if init == "systemd":
        if method == "kexec":
            return ["systemctl --no-block kexec"]
        return ["SYSTEMCTL_SKIP_AUTO_KEXEC=1 systemctl --no-block reboot"]
    steps = ["%s stop" % s for s in rc6_scripts(rc6_dir)] + ["sync"]
    steps.append("reboot(LINUX_REBOOT_CMD_KEXEC)" if method == "kexec" else "reboot(RB_AUTOBOOT)")
    return steps


def _libc():
    """libc for reboot(RB_AUTOBOOT), the one call the loader's syscall layer has no use for."""
    return ctypes.CDLL(None, use_errno=True)


def unload_kexec_image(syscalls=None, arch=None):
    """Unload the normal kexec image through the loader's syscall layer: kexec_file_load with
    KEXEC_FILE_UNLOAD first (it also unloads an image kexec_load loaded, and lockdown allows it),
    then kexec_load with no segments.  Returns the call that worked; raises RebootError listing
    the errors otherwise."""
    syscalls = syscalls or default_syscalls(arch or platform.machine())
    errors = []
    for method, call in (("file", "kexec_file_load"), ("classic", "kexec_load")):
        try:
            syscalls.unload(crash=False, method=method)
            return call
        except KexecError as err:
            errors.append(str(err))
    raise RebootError("cannot unload the kexec image (%s): a cold reboot would jump into it "
                      "instead; the host was not rebooted" % "; ".join(errors))


def write_status(boot_id, state, method, msg=None, path=STATUS_FILE):
    """Tell the controller what became of the trigger (the file lives in /run: a reboot clears it)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"boot_id": boot_id, "state": state, "method": method, "msg": msg,
                       "time": time.time()}, f)
        os.replace(path + ".tmp", path)
    except (IOError, OSError):
        pass


def _log(msg):
    try:
        syslog.openlog("fleetboot-kexec-reboot")
        syslog.syslog(syslog.LOG_WARNING, msg)
    except Exception:  # pylint: disable=broad-except  # logging must never stop the reboot
        pass


def run_shutdown(init, method, boot_id, libc=None, runner=subprocess.run, rc6_dir=RC6_DIR,
                 systemctl="systemctl", syscalls=None):
    """The shutdown itself (runs in the detached child). Returns only when the reboot was refused."""
    if init == "systemd":
        env = dict(os.environ)
        verb = "kexec"
        if method == "cold":
            env["SYSTEMCTL_SKIP_AUTO_KEXEC"] = "1"
            verb = "reboot"
        proc = runner([systemctl, "--no-block", verb], stdin=subprocess.DEVNULL,
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, check=False)
        if proc.returncode != 0:
            said = proc.stdout.decode("utf-8", "replace").strip() if proc.stdout else ""
            return "systemctl %s failed (exit %d): %s" % (verb, proc.returncode, said or "no message")
        return None
    for script in rc6_scripts(rc6_dir):
        try:
            runner([script, "stop"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120, check=False)
        except Exception as e:  # pylint: disable=broad-except  # one bad script must not stop the rest
            _log("rc6 script %s: %s" % (script, e))
    os.sync()
    libc = libc or _libc()
    if method == "kexec":
        try:
            (syscalls or default_syscalls(platform.machine())).reboot_kexec()
        except KexecError as err:
            # The services are stopped already: a host left like this is worse than a cold-booted one.
            _log("%s; rebooting through the firmware" % err)
    libc.reboot(ctypes.c_int(RB_AUTOBOOT))
    return "reboot failed: %s" % os.strerror(ctypes.get_errno())


def detach(job):
    """Run `job` in a grandchild in its own session, stdio on /dev/null; return in the parent at once.

    The module's stdout pipe must not stay open in the child, or Ansible would wait for it.
    """
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 1024)
        job()
    except BaseException:  # pylint: disable=broad-except  # the child must never return into the module
        pass
    os._exit(0)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            fallback=dict(type="str", default="fail", choices=["cold", "fail"]),
            method=dict(type="str", default="auto", choices=["auto", "cold"]),
            reboot_timeout=dict(type="int", default=600),
            connect_timeout=dict(type="int"),
            test_command=dict(type="str", default="whoami"),
            pre_reboot_delay=dict(type="int", default=0),
            post_reboot_delay=dict(type="int", default=0),
            expect_release=dict(type="str"),
            expect_cmdline=dict(type="list", elements="str"),
            msg=dict(type="str", default=DEFAULT_MSG),
            reboot_command=dict(type="str"),
            boot_time_command=dict(type="str"),
            search_paths=dict(type="list", elements="str", default=list(DEFAULT_SEARCH_PATHS)),
        ),
        supports_check_mode=True,
    )
    p = module.params
    state = host_state()
    init = init_system(search_paths=p["search_paths"])
    result = dict(changed=False, rebooted=False, init=init, old_boot_id=state["boot_id"],
                  old_release=state["release"],
                  kexec_loaded=state["kexec_loaded"], triggered=False)
    if not state["boot_id"]:
        module.fail_json(msg="cannot read %s: is this a Linux host?" % BOOT_ID, **result)
    if os.geteuid() != 0:
        module.fail_json(msg="kexec_reboot needs root on the host: run the task with become: true",
                         **result)
    custom = None
    try:
        if (p["reboot_command"] or "").strip() and p["method"] != "cold":
            custom = resolve_reboot_command(p["reboot_command"], p["search_paths"])
    except RebootError as e:
        module.fail_json(msg=str(e), **result)
    try:
        method, reason = choose_method(p["method"], p["fallback"], state["kexec_loaded"], custom=bool(custom))
    except RebootError as e:
        if not module.check_mode:
            module.fail_json(msg=str(e), **result)
        # In a check-mode run the kexec_load task before this one loaded nothing: say what a real
        # run needs instead of failing the whole check.
        module.warn("%s (kexec_load loads nothing in check mode; a real run fails unless an image "
                    "is loaded by then)" % e)
        method, reason = "kexec", None
    result.update(method=method, command=[custom] if custom else shutdown_steps(init, method))
    if reason:
        result["reason"] = reason
    if module.check_mode:
        result.update(changed=True, msg="would reboot by %s%s" % (method, " (%s)" % reason if reason else ""))
        module.exit_json(**result)

    if method == "cold" and state["kexec_loaded"]:
        try:
            result["unloaded_with"] = unload_kexec_image()
        except RebootError as e:
            module.fail_json(msg=str(e), **result)
        if read_text(KEXEC_LOADED, "0") == "1":
            module.fail_json(msg="the kexec image is still loaded after unloading it: a cold reboot "
                             "would jump into it instead; the host was not rebooted", **result)

    delay = max(0, p["pre_reboot_delay"]) + DETACH_SLEEP
    boot_id = state["boot_id"]
    systemctl = find_command("systemctl", p["search_paths"]) or "systemctl"
    result["announced"], warning = announce(p["msg"], p["search_paths"])
    if warning:
        module.warn(warning)
    if p["msg"]:
        _log("%s reboot in %.0f s: %s" % (method, delay, p["msg"]))
    write_status(boot_id, "scheduled", method)

    def job():
        time.sleep(delay)
        write_status(boot_id, "triggered", method)
        if custom:
            refused = run_reboot_command(custom)
        else:
            refused = run_shutdown(init, method, boot_id, systemctl=systemctl)
        if refused:
            _log(refused)
            write_status(boot_id, "failed", method, refused)

    sys.stdout.flush()
    sys.stderr.flush()
    detach(job)
    result.update(changed=True, triggered=True,
                  msg="%s reboot starts in %.1f s" % (method, delay))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
