"""A named fleet of lab VMs: its state directory, its inventory, up / status / down.

State lives in `<state root>/<fleet name>/` ($FLEETBOOT_LAB_STATE or `.lab/` in the repository):
fleet.json, the SSH key, inventory.yml and one directory per VM (overlay, serial log, vm.json).
"""

import json
import os
import shutil
import sys
import threading
import time

from lab import image as lab_image
from lab import ssh
from lab.image import LabError
from lab.vm import VM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


def state_root():
    return os.environ.get("FLEETBOOT_LAB_STATE") or os.path.join(REPO, ".lab")


def inventory_yaml(hosts, key_file, group="lab"):
    """An Ansible YAML inventory for `hosts` [(name, port, extra vars)].

    Host key checking is switched off through the group's ssh args, so only lab hosts are affected.
    Pipelining is on: the lab logs in as root (no sudo, no requiretty), and under TCG every round
    trip it saves per task is worth seconds.
    """
    lines = ["all:", "  children:", "    %s:" % group, "      vars:",
             "        ansible_host: 127.0.0.1",
             "        ansible_user: root",
             "        ansible_python_interpreter: /usr/bin/python3",
             "        ansible_ssh_private_key_file: %s" % json.dumps(key_file),
             "        ansible_ssh_common_args: %s" % json.dumps(SSH_OPTIONS),
             "        ansible_pipelining: true",
             "      hosts:"]
    for name, port, extra in hosts:
        lines.append("        %s:" % name)
        lines.append("          ansible_port: %d" % port)
        for k in sorted(extra):
            lines.append("          %s: %s" % (k, json.dumps(extra[k])))
    return "\n".join(lines) + "\n"


class Fleet:
    """The VMs of one named fleet."""

    def __init__(self, name="lab", root=None):
        self.name = name
        self.directory = os.path.join(root or state_root(), name)
        self.vms = []
        self.image = None

    @property
    def inventory(self):
        return os.path.join(self.directory, "inventory.yml")

    @property
    def key_file(self):
        return os.path.join(self.directory, "id_ed25519")

    @property
    def state_file(self):
        return os.path.join(self.directory, "fleet.json")

    def exists(self):
        return os.path.exists(self.state_file)

    def load(self):
        if not self.exists():
            raise LabError("no lab fleet named %r is up (state: %s); start one with "
                           "`python -m lab up`" % (self.name, self.directory))
        with open(self.state_file) as f:
            state = json.load(f)
        self.image = lab_image.Image(state["image"])
        self.vms = [VM.load(os.path.join(self.directory, n), self.image) for n in state["hosts"]]
        return self

    def vm(self, name):
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise LabError("no VM %r in fleet %r (hosts: %s)"
                       % (name, self.name, ", ".join(v.name for v in self.vms) or "none"))

    def _save(self):
        with open(self.state_file, "w") as f:
            json.dump({"name": self.name, "image": self.image.directory,
                       "hosts": [vm.name for vm in self.vms]}, f, indent=2)
        with open(self.inventory, "w") as f:
            f.write(inventory_yaml([(vm.name, vm.port, {}) for vm in self.vms], self.key_file))

    def up(self, hosts=2, memory=1024, cpus=1, append="", uefi=False, no_reboot=True,
           prefix="vm", die_with_parent=False, timeout=300, out=sys.stderr, kernel=None, post_delay=0):
        """Boot `hosts` VMs on the lab image and wait until each answers SSH.

        ``kernel`` is the release QEMU boots (the image's older one by default); ``post_delay``
        makes the firmware wait that many seconds before every boot through it (a simulated POST).
        Anything started is stopped again if this fails or is interrupted.
        """
        if self.exists():
            self.load()
            if self.vms and all(vm.running() for vm in self.vms):
                out.write("lab: fleet %r is already up\n" % self.name)
                return self
            raise LabError("fleet %r has state from an earlier run (%s); run `python -m lab "
                           "down --name %s` first" % (self.name, self.directory, self.name))
        self.image = lab_image.build(log_to=out)
        os.makedirs(self.directory, exist_ok=True)
        shutil.copyfile(self.image.key, self.key_file)
        os.chmod(self.key_file, 0o600)
        self.vms = [VM("%s%d" % (prefix, i + 1), os.path.join(self.directory, "%s%d" % (prefix, i + 1)),
                       self.image, memory=memory, cpus=cpus, append=append, uefi=uefi,
                       no_reboot=no_reboot, kernel=kernel, post_delay=post_delay) for i in range(hosts)]
        try:
            for vm in self.vms:
                vm.prepare()
                vm.start(die_with_parent=die_with_parent)
            self._save()
            out.write("lab: started %s, waiting for SSH (up to %d s)\n"
                      % (", ".join("%s (pid %d, port %d)" % (v.name, v.pid, v.port) for v in self.vms),
                         timeout))
            started = time.time()
            self.wait_all(timeout)
            out.write("lab: %d VM(s) answer SSH after %.0f s; inventory: %s\n"
                      % (len(self.vms), time.time() - started, self.inventory))
        except BaseException:
            self.down(out=out)
            raise
        return self

    def wait_all(self, timeout=300):
        """Wait for every VM in parallel; raise the first failure after all have finished."""
        errors = {}

        def wait(vm):
            try:
                ssh.wait_answering(vm, self.key_file, timeout)
            except Exception as e:  # reported below, per VM
                errors[vm.name] = e

        threads = [threading.Thread(target=wait, args=(vm,), daemon=True) for vm in self.vms]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise LabError("\n\n".join(str(errors[n]) for n in sorted(errors)))

    def run(self, name, command, timeout=120):
        """Run a command on one VM over SSH: (exit status, stdout, stderr)."""
        return ssh.run(self.vm(name).port, self.key_file, command, timeout=timeout)

    def put_file(self, name, local_path, remote_path):
        """Copy one file into one VM (SFTP)."""
        ssh.put_file(self.vm(name).port, self.key_file, local_path, remote_path)

    def get_file(self, name, remote_path, local_path):
        """Copy one file out of one VM (SFTP)."""
        ssh.get_file(self.vm(name).port, self.key_file, remote_path, local_path)

    def put_tree(self, name, local_dir, remote_dir):
        """Copy a directory tree into one VM (SFTP)."""
        ssh.put_tree(self.vm(name).port, self.key_file, local_dir, remote_dir)

    def boot_id(self, name, timeout=300):
        """Wait until the VM answers SSH and return its boot_id (raises LabError on timeout)."""
        return ssh.wait_answering(self.vm(name), self.key_file, timeout)

    def status(self):
        """Plain-value status of each VM: running, or how it ended."""
        result = []
        for vm in self.vms:
            entry = {"name": vm.name, "pid": vm.pid, "port": vm.port, "kernel": vm.kernel,
                     "running": vm.running(), "serial_log": vm.serial_log}
            if not entry["running"]:
                entry["exit_reason"] = vm.exit_reason()
            result.append(entry)
        return result

    def firmware_resets(self):
        """Names of VMs whose QEMU process ended: with -no-reboot that is a reset or a crash."""
        return [vm.name for vm in self.vms if vm.no_reboot and not vm.running()]

    def firmware_reset_count(self, name):
        """How many times VM `name` rebooted through the firmware (counted on its serial log)."""
        return self.vm(name).firmware_reset_count()

    def down(self, out=sys.stderr):
        """Stop every VM, drop the overlays and inventory; the logs stay for a post-mortem."""
        if not self.vms and self.exists():
            try:
                self.load()
            except (OSError, ValueError, KeyError):
                pass
        for vm in self.vms:
            vm.stop()
            for path in (vm.overlay, vm.efivars):
                if os.path.exists(path):
                    os.unlink(path)
        for path in (self.state_file, self.inventory):
            if os.path.exists(path):
                os.unlink(path)
        if self.vms:
            out.write("lab: fleet %r is down (%d VM(s) stopped; logs kept in %s)\n"
                      % (self.name, len(self.vms), self.directory))
        self.vms = []
