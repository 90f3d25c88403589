"""Checks the arm64 and ppc64le e2e files share: the VM's QEMU and tools are there, and Ansible
reaches the VM through its architecture's inventory group on the older kernel of its own
architecture (test_kexec_arm64.py and test_kexec_ppc64le.py start with it, on the VMs they kexec
afterwards: no VM is booted only to see it boot)."""

import re
import shutil

import pytest

from lab import arches

from .conftest import ansible

# `uname -m` inside the guest.
MACHINE = {"x86_64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le"}


def require_qemu(arch):
    """Fail (not skip: `make deps` installs them) when the architecture's QEMU or firmware is missing."""
    a = arches.get(arch)
    missing = [c for c in (a.qemu, "qemu-img", "debootstrap", "mkfs.ext4", "dpkg-deb") if shutil.which(c) is None]
    if missing:
        pytest.fail("the %s lab needs %s: run `make deps`" % (arch, ", ".join(missing)))


def one_line(result, host):
    """What one host printed (stripped), from an ad-hoc `ansible -m command|shell` run that succeeded."""
    assert result.returncode == 0, result.stdout
    match = re.search(r"^%s \| (?:CHANGED|SUCCESS) \| rc=0 >>\n(.*?)(?=^\S+ \| |\Z)" % re.escape(host),
                      result.stdout, re.M | re.S)
    assert match, result.stdout
    return match.group(1).strip()


def answers_ansible_on_the_older_kernel(fleet, arch):
    """ping and `uname -rm` through the fleet's inventory: every VM answers on its arch's boot kernel,
    in group `lab` and `lab_<arch>`, and no QEMU process ended on the way."""
    a = arches.get(arch)
    pids = {vm.name: (vm.pid, vm.start_time) for vm in fleet.vms}
    ping = ansible(fleet, a.group, "-m", "ping")
    assert ping.returncode == 0, ping.stdout
    for name in pids:
        assert re.search(r"^%s \| SUCCESS" % re.escape(name), ping.stdout, re.M), ping.stdout
    uname = ansible(fleet, "lab", "-m", "command", "-a", "uname -rm")
    for name in pids:
        assert one_line(uname, name) == "%s %s" % (a.boot_kernel, MACHINE[arch])
    for vm in fleet.vms:
        assert vm.running(), vm.exit_reason()
        assert (vm.pid, vm.start_time) == pids[vm.name]
    assert fleet.firmware_resets() == []
