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

from lab import arches, foreign, ssh
from lab import image as lab_image
from lab.image import LabError
from lab.vm import VM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


def state_root():
    return os.environ.get("FLEETBOOT_LAB_STATE") or os.path.join(REPO, ".lab")


def inventory_yaml(hosts, key_file, group="lab", groups=None):
    """An Ansible YAML inventory for `hosts` [(name, port, extra vars)].

    Host key checking is switched off through the group's ssh args, so only lab hosts are affected.
    Pipelining is on: the lab logs in as root (no sudo, no requiretty), and under TCG every round
    trip it saves per task is worth seconds. ``groups`` ({group: [host names]}) adds more groups,
    e.g. one per architecture (lab_x86_64, lab_arm64, lab_ppc64le), so a mixed fleet is one
    inventory.
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
    for extra_group in sorted(groups or {}):
        lines += ["    %s:" % extra_group, "      hosts:"]
        lines += ["        %s: {}" % name for name in groups[extra_group]]
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
        images = state.get("images", {})
        self.vms = [VM.load(os.path.join(self.directory, n), lab_image.Image(images.get(n, state["image"])))
                    for n in state["hosts"]]
        return self

    def vm(self, name):
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise LabError("no VM %r in fleet %r (hosts: %s)"
                       % (name, self.name, ", ".join(v.name for v in self.vms) or "none"))

    def key_for(self, vm):
        """The SSH key of a VM: each image has its own, copied into the fleet's directory
        (``id_ed25519`` for the first architecture, ``id_ed25519-<arch>`` for the others)."""
        first = self.vms[0].arch.name if self.vms else vm.arch.name
        return self.key_file if vm.arch.name == first else "%s-%s" % (self.key_file, vm.arch.name)

    def _save(self):
        with open(self.state_file, "w") as f:
            json.dump({"name": self.name, "image": self.image.directory,
                       "images": {vm.name: vm.image.directory for vm in self.vms},
                       "hosts": [vm.name for vm in self.vms]}, f, indent=2)
        groups = {}
        for vm in self.vms:
            groups.setdefault(vm.arch.group, []).append(vm.name)
        hosts = [(vm.name, vm.port, {} if self.key_for(vm) == self.key_file
                  else {"ansible_ssh_private_key_file": self.key_for(vm)}) for vm in self.vms]
        with open(self.inventory, "w") as f:
            f.write(inventory_yaml(hosts, self.key_file, groups=groups))

    def up(self, hosts=2, memory=1024, cpus=1, append="", uefi=False, no_reboot=True,
           prefix="vm", die_with_parent=False, timeout=300, out=sys.stderr, arch="x86_64", kernel=None,
           post_delay=0, debian_initrd=False):
        """Boot `hosts` VMs on the lab image and wait until each answers SSH.

        ``arch`` is one architecture (x86_64, arm64, ppc64le) or several, comma-separated (or
        ``all``): then `hosts` VMs of each, numbered in that order, in one inventory. ``uefi``
        applies to the architectures that have UEFI firmware in the lab (x86_64, arm64). ``kernel``
        boots another of the image's kernels than its boot kernel (e.g. ppc64le's 4 KiB-page 6.12);
        ``post_delay`` makes the firmware wait that many seconds before every boot through it (a
        simulated POST; SeaBIOS only); ``debian_initrd`` boots Debian's initrd instead of the lab's
        small one (x86_64), as a kexec does: for reboot timings that compare the two.
        Anything started is stopped again if this fails or is interrupted.
        """
        ssh.require_client()
        if self.exists():
            self.load()
            if self.vms and all(vm.running() for vm in self.vms):
                out.write("lab: fleet %r is already up\n" % self.name)
                return self
            raise LabError("fleet %r has state from an earlier run (%s); run `python -m lab "
                           "down --name %s` first" % (self.name, self.directory, self.name))
        if hosts < 1:
            raise LabError("--hosts must be at least 1 (got %d)" % hosts)
        chosen = arch if isinstance(arch, (list, tuple)) else arches.parse_list(arch)
        chosen = [arches.get(a) if isinstance(a, str) else a for a in chosen]
        images = [foreign.image_for(a, log_to=out) for a in chosen]
        self.image = images[0]
        os.makedirs(self.directory, exist_ok=True)
        self.vms = []
        for a, image in zip(chosen, images):
            if kernel and not os.path.exists(image.kernel(kernel)):
                raise LabError("the %s image has no kernel %s (it has %s)"
                               % (a.name, kernel, ", ".join(image.manifest()["kernels"])))
            first = len(self.vms) + 1
            for number in range(first, first + hosts):
                name = "%s%d" % (prefix, number)
                self.vms.append(VM(name, os.path.join(self.directory, name), image, memory=memory, cpus=cpus,
                                   append=append, uefi=uefi and (a.uefi is not None or len(chosen) == 1),
                                   no_reboot=no_reboot, kernel=kernel, arch=a.name, post_delay=post_delay,
                                   debian_initrd=debian_initrd))
            key = self.key_for(self.vms[-1])
            shutil.copyfile(image.key, key)
            os.chmod(key, 0o600)
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
                ssh.wait_answering(vm, self.key_for(vm), timeout)
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
        vm = self.vm(name)
        return ssh.run(vm.port, self.key_for(vm), command, timeout=timeout)

    def put_file(self, name, local_path, remote_path):
        """Copy one file into one VM (SFTP)."""
        vm = self.vm(name)
        ssh.put_file(vm.port, self.key_for(vm), local_path, remote_path)

    def get_file(self, name, remote_path, local_path):
        """Copy one file out of one VM (SFTP)."""
        ssh.get_file(self.vm(name).port, self.key_file, remote_path, local_path)

    def put_tree(self, name, local_dir, remote_dir):
        """Copy a directory tree into one VM (SFTP)."""
        vm = self.vm(name)
        ssh.put_tree(vm.port, self.key_for(vm), local_dir, remote_dir)

    def boot_id(self, name, timeout=300):
        """Wait until the VM answers SSH and return its boot_id (raises LabError on timeout)."""
        vm = self.vm(name)
        return ssh.wait_answering(vm, self.key_for(vm), timeout)

    def status(self):
        """Plain-value status of each VM: running, or how it ended."""
        result = []
        for vm in self.vms:
            entry = {"name": vm.name, "arch": vm.arch.name, "uefi": vm.uefi, "pid": vm.pid, "port": vm.port,
                     "kernel": vm.kernel,
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
