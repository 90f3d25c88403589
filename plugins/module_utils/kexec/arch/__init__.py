# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The architectures the loader knows, by ``uname -m``.

Plain imports on purpose: Ansible's module bundler follows import statements only, so every
architecture a module may meet is named here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..dump.vmcore import VmcoreError
from ..errors import HostError
from ..machines import normalize_arch
from .arm64 import ARCH as ARM64
from .ppc64le import ARCH as PPC64LE
from .x86_64 import ARCH as X86_64

#: Every architecture package, in a stable order.
ARCHES = (X86_64, ARM64, PPC64LE)


def for_machine(machine):
    """The Arch for a ``uname -m`` name (aliases such as amd64 and arm64 accepted)."""
    name = normalize_arch(machine)
    for arch in ARCHES:
        if name in arch.machines:
            return arch
    raise HostError("the loader does not support architecture %s yet (it loads kernels on %s); "
                    "reboot such hosts through the firmware (fallback: cold)"
                    % (machine, ", ".join(m for a in ARCHES for m in a.machines)))


def for_host(host):
    """The Arch of a Host value."""
    return for_machine(getattr(host, "arch", None) or "x86_64")


def for_elf_machine(e_machine):
    """The Arch whose kernels have ELF machine ``e_machine`` (vmcores), or None."""
    for arch in ARCHES:
        if arch.elf_machine == e_machine:
            return arch
    return None


def vmcore_memory(core, info):
    """The kernel-memory reader for a vmcore (dump/printk.py), chosen by the core's machine."""
    arch = for_elf_machine(core.machine)
    if arch is None:
        raise VmcoreError("%s is a core of ELF machine %d, which the loader does not read" % (core.path, core.machine))
    return arch.vmcore_memory(core, info)
