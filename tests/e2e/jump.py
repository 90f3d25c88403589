"""Shared steps of the kexec e2e tests: ship the loader to a VM, load, jump, watch."""

import os
import shlex
import time

from .conftest import REPO

LOADER = os.path.join(REPO, "plugins", "module_utils", "kexec")
NEW_KERNEL = "6.1.0-56-amd64"
REMOTE = "/root/fleetboot"


def ship_loader(fleet, name):
    """Copy the stdlib-only loader into the VM as a top-level package `kexec`."""
    fleet.put_tree(name, LOADER, REMOTE + "/kexec")


def cli(fleet, name, args, env=None, timeout=300):
    """Run the loader's CLI on the VM: (exit status, stdout, stderr)."""
    prefix = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted((env or {}).items()))
    cmd = "cd %s && %s python3 -m kexec.cli %s" % (REMOTE, prefix, " ".join(shlex.quote(a) for a in args))
    return fleet.run(name, cmd, timeout=timeout)


def load_new_kernel(fleet, name, method, env=None):
    args = ["load", "--kernel", "/boot/vmlinuz-" + NEW_KERNEL,
            "--initrd", "/boot/initrd.img-" + NEW_KERNEL, "--reuse-cmdline", "--method", method]
    return cli(fleet, name, args, env=env)


def jump(fleet, name):
    """Start `systemctl kexec` detached; return the boot_id from before the jump."""
    rc, out, err = fleet.run(name, "cat /proc/sys/kernel/random/boot_id")
    assert rc == 0, err
    rc, dummy, err = fleet.run(name, "systemctl --no-block kexec")
    assert rc == 0, err
    return out.strip()


def wait_new_boot(fleet, name, old_boot_id, timeout=240):
    """Wait until the VM answers with a boot_id other than `old_boot_id`; return it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        boot_id = fleet.boot_id(name, timeout=max(5, int(deadline - time.time())))
        if boot_id != old_boot_id:
            return boot_id
        time.sleep(2)
    raise AssertionError("VM %s still runs boot %s after %d s" % (name, old_boot_id, timeout))


def halted_in_purgatory(fleet, vm, message, timeout=240):
    """After a jump into a corrupted image: wait for purgatory's ``message`` on the console, then
    check the VM stays halted (same QEMU process, no kernel after it, no SSH).  Returns the
    console line that starts with ``message``."""
    deadline = time.time() + timeout
    console = ""
    while time.time() < deadline and message not in console:
        time.sleep(2)
        with open(vm.serial_log, errors="replace") as f:
            console = f.read()
    assert message in console, vm.serial_tail()
    time.sleep(10)
    assert vm.running(), vm.exit_reason()  # halted, not reset
    with open(vm.serial_log, errors="replace") as f:
        tail = f.read()[console.index(message):]
    assert "Linux version" not in tail  # no kernel started after the refusal
    try:
        fleet.boot_id(vm.name, timeout=20)
    except Exception as e:  # LabError: it did not answer
        assert "did not answer SSH" in str(e)
    else:
        raise AssertionError("the VM answered SSH after purgatory should have halted it")
    return tail.splitlines()[0].strip()
