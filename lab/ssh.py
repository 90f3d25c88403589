"""SSH to lab VMs with paramiko: wait until a VM answers, run a command on it."""

import logging
import os
import posixpath
import socket
import time

from lab.image import LabError

try:
    import paramiko
except ImportError:  # pragma: no cover - the lab runs from the project's .venv
    paramiko = None

# While sshd starts, paramiko's transport thread logs every refused banner with a traceback.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def require_client():
    """Fail at once, before any VM is started, when this Python cannot speak SSH."""
    if paramiko is None:
        raise LabError("paramiko is missing: run the lab from the project's venv (make venv), "
                       "e.g. .venv/bin/python -m lab")


def _client(port, key_file, timeout):
    require_client()
    client = paramiko.SSHClient()
    # Lab VMs are throwaway and share the image's host keys: no known_hosts for them.
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=port, username="root", key_filename=key_file,
                   timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                   allow_agent=False, look_for_keys=False)
    return client


def run(port, key_file, command, timeout=60):
    """Run `command` on the VM; return (exit status, stdout, stderr) as text."""
    client = _client(port, key_file, timeout=min(timeout, 15))
    try:
        stdout, stderr = client.exec_command(command, timeout=timeout)[1:]
        out = stdout.read().decode("utf-8", "replace")
        err = stderr.read().decode("utf-8", "replace")
        return stdout.channel.recv_exit_status(), out, err
    finally:
        client.close()


#: While a VM boots, QEMU's user networking accepts the connection on the host side at once and
#: then waits for the guest: a probe with a long banner timeout would sit on a dead attempt long
#: after sshd came up. Short attempts, close together, see the first second sshd answers.
PROBE_TIMEOUT = 4
PROBE_INTERVAL = 0.5


def wait_answering(vm, key_file, timeout=180):
    """Wait until the VM runs commands over SSH; return its boot_id.

    Fails early when the QEMU process is gone, and on timeout names the VM's serial log.
    """
    deadline = time.time() + timeout
    last = "no answer yet"
    while time.time() < deadline:
        if not vm.running():
            raise LabError("VM %s: its QEMU process ended while waiting for SSH (%s).\n"
                           "Serial log: %s\n--- last lines ---\n%s"
                           % (vm.name, vm.exit_reason(), vm.serial_log, vm.serial_tail()))
        try:
            rc, out = run(vm.port, key_file, "cat /proc/sys/kernel/random/boot_id", timeout=PROBE_TIMEOUT)[:2]
            if rc == 0 and out.strip():
                return out.strip()
            last = "command exited %d" % rc
        except (socket.error, EOFError, OSError) as e:
            last = str(e) or e.__class__.__name__
        except LabError:  # no SSH client at all: waiting would not help
            raise
        except Exception as e:  # paramiko's SSHException family while sshd starts
            last = "%s: %s" % (e.__class__.__name__, e)
        time.sleep(PROBE_INTERVAL)
    raise LabError("VM %s did not answer SSH on 127.0.0.1:%d within %d s (last: %s).\n"
                   "Serial log: %s\n--- last lines ---\n%s"
                   % (vm.name, vm.port, timeout, last, vm.serial_log, vm.serial_tail()))


def _makedirs(sftp, path):
    """mkdir -p over SFTP."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        here = "/" + "/".join(parts[:i])
        try:
            sftp.stat(here)
        except IOError:
            sftp.mkdir(here)


def put_file(port, key_file, local_path, remote_path):
    """Copy one file to the VM over SFTP (its directory must exist)."""
    client = _client(port, key_file, timeout=15)
    try:
        sftp = client.open_sftp()
        sftp.put(local_path, remote_path)
        sftp.close()
    finally:
        client.close()


def get_file(port, key_file, remote_path, local_path):
    """Copy one file from the VM over SFTP."""
    client = _client(port, key_file, timeout=15)
    try:
        sftp = client.open_sftp()
        sftp.get(remote_path, local_path)
        sftp.close()
    finally:
        client.close()


def put_tree(port, key_file, local_dir, remote_dir, skip=("__pycache__",)):
    """Copy a local directory tree to the VM over SFTP (replacing files of the same name)."""
    client = _client(port, key_file, timeout=15)
    try:
        sftp = client.open_sftp()
        for here, dirs, files in os.walk(local_dir):
            dirs[:] = [d for d in dirs if d not in skip]
            rel = os.path.relpath(here, local_dir)
            target = remote_dir if rel == "." else posixpath.join(remote_dir, *rel.split(os.sep))
            _makedirs(sftp, target)
            for name in files:
                if not name.endswith(".pyc"):
                    sftp.put(os.path.join(here, name), posixpath.join(target, name))
        sftp.close()
    finally:
        client.close()
