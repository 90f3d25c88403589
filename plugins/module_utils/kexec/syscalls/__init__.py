# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kexec syscalls: one table of numbers (numbers.py), one interface (base.py), the real calls
through ctypes (real.py), a recording fake for tests (fake.py), and the errno -> message table
(messages.py).  Nothing before this step of the loader touches the kernel.

The names below are the package's interface; import them from here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .base import Syscalls, buffer_sha256, segment_values
from .errnos import (EBADMSG, EKEYEXPIRED, EKEYREJECTED, EKEYREVOKED, ENODATA, ENOKEY, ENOPKG, ENOTSUP,
                     EOPNOTSUPP, FALLBACK_ERRNOS, SIGNATURE_ERRNOS)
from .fake import FakeSyscalls
from .messages import error_for
from .numbers import (KEXEC_ARCH_386, KEXEC_ARCH_AARCH64, KEXEC_ARCH_ARM, KEXEC_ARCH_DEFAULT, KEXEC_ARCH_FLAGS,
                      KEXEC_ARCH_MASK, KEXEC_ARCH_PPC64, KEXEC_ARCH_RISCV, KEXEC_ARCH_S390, KEXEC_ARCH_X86_64,
                      KEXEC_FILE_NO_INITRAMFS, KEXEC_FILE_ON_CRASH, KEXEC_FILE_UNLOAD, KEXEC_ON_CRASH,
                      KEXEC_PRESERVE_CONTEXT, KEXEC_SEGMENT_MAX, LINUX_REBOOT_CMD_KEXEC, LINUX_REBOOT_MAGIC1,
                      LINUX_REBOOT_MAGIC2, SYSCALL_NUMBERS, kexec_arch_flag, normalize_arch)
from .real import CtypesSyscalls, KexecSegment

__all__ = [
    "Syscalls", "CtypesSyscalls", "FakeSyscalls", "KexecSegment", "default_syscalls", "error_for",
    "buffer_sha256", "segment_values", "normalize_arch", "kexec_arch_flag", "SYSCALL_NUMBERS",
    "KEXEC_ARCH_FLAGS", "KEXEC_ARCH_MASK", "KEXEC_ARCH_DEFAULT", "KEXEC_ARCH_386", "KEXEC_ARCH_PPC64",
    "KEXEC_ARCH_S390", "KEXEC_ARCH_ARM", "KEXEC_ARCH_X86_64", "KEXEC_ARCH_AARCH64", "KEXEC_ARCH_RISCV",
    "KEXEC_ON_CRASH", "KEXEC_PRESERVE_CONTEXT", "KEXEC_SEGMENT_MAX", "KEXEC_FILE_UNLOAD",
    "KEXEC_FILE_ON_CRASH", "KEXEC_FILE_NO_INITRAMFS", "LINUX_REBOOT_MAGIC1", "LINUX_REBOOT_MAGIC2",
    "LINUX_REBOOT_CMD_KEXEC", "FALLBACK_ERRNOS", "SIGNATURE_ERRNOS", "ENOTSUP", "EOPNOTSUPP",
    "EKEYREJECTED", "ENOKEY", "EBADMSG", "EKEYREVOKED", "EKEYEXPIRED", "ENODATA", "ENOPKG",
]


def default_syscalls(arch=None, host=None):
    """The real implementation for this machine."""
    return CtypesSyscalls(arch, host)
