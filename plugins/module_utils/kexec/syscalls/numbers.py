# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one table of kexec syscall numbers, flags and KEXEC_ARCH_* values, per architecture.

Everything that calls the kernel (the loader, the kexec_reboot module's unload) takes its numbers
from here.  Architectures are named as ``uname -m`` prints them, after normalize_arch().
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..machines import normalize_arch

# <uapi/linux/kexec.h>: kexec_load flags (the high 16 bits name the architecture).
KEXEC_ON_CRASH = 0x00000001
KEXEC_PRESERVE_CONTEXT = 0x00000002
KEXEC_ARCH_MASK = 0xFFFF0000
KEXEC_ARCH_DEFAULT = 0 << 16
KEXEC_ARCH_386 = 3 << 16
KEXEC_ARCH_PPC64 = 21 << 16
KEXEC_ARCH_S390 = 22 << 16
KEXEC_ARCH_ARM = 40 << 16
KEXEC_ARCH_X86_64 = 62 << 16
KEXEC_ARCH_AARCH64 = 183 << 16
KEXEC_ARCH_RISCV = 243 << 16
KEXEC_SEGMENT_MAX = 16

# kexec_file_load flags.
KEXEC_FILE_UNLOAD = 0x00000001
KEXEC_FILE_ON_CRASH = 0x00000002
KEXEC_FILE_NO_INITRAMFS = 0x00000004

# <uapi/linux/reboot.h>
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_KEXEC = 0x45584543

# Per-architecture syscall numbers: (kexec_load, kexec_file_load, reboot).  None: no such syscall.
# aarch64 and riscv64 use the generic table (include/uapi/asm-generic/unistd.h).
SYSCALL_NUMBERS = {
    "x86_64": (246, 320, 169),
    "aarch64": (104, 294, 142),
    "riscv64": (104, 294, 142),
    "ppc64le": (268, 382, 88),
    "ppc64": (268, 382, 88),
    "s390x": (277, 381, 88),
    "i386": (283, None, 88),
}

KEXEC_ARCH_FLAGS = {
    "x86_64": KEXEC_ARCH_X86_64,
    "aarch64": KEXEC_ARCH_AARCH64,
    "riscv64": KEXEC_ARCH_RISCV,
    "ppc64le": KEXEC_ARCH_PPC64,
    "ppc64": KEXEC_ARCH_PPC64,
    "s390x": KEXEC_ARCH_S390,
    "i386": KEXEC_ARCH_386,
}


def kexec_arch_flag(arch):
    """The KEXEC_ARCH_* value kexec_load expects in its flags' high half for ``arch``."""
    return KEXEC_ARCH_FLAGS.get(normalize_arch(arch), KEXEC_ARCH_DEFAULT)
