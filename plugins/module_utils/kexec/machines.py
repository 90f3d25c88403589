# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Architecture names as ``uname -m`` prints them, whatever a distribution or a user calls them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

#: Debian and Go names, and other spellings, for the kernel's machine names.
ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "i686": "i386", "i586": "i386",
           "x86": "i386", "powerpc64le": "ppc64le", "ppc64el": "ppc64le", "powerpc64": "ppc64"}


def normalize_arch(arch=None):
    """Kernel-style architecture name ('x86_64', 'aarch64', 'ppc64le', ...) of ``arch`` or this machine."""
    # os.uname() is what platform.machine() reads, without importing platform.
    arch = (arch or os.uname()[4]).strip()
    return ALIASES.get(arch, arch)
