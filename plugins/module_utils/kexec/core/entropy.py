# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fresh random bytes from the running kernel, for the next kernel's RNG (and KASLR) seeds.

A kernel that starts without a seed waits for entropy early in its boot (systemd, sshd), which
is what a kexec must not cost.  Every architecture passes fresh bytes its own way (a record in
its boot data, a device-tree property; see arch/); they come from here: getrandom(2), non-blocking as the kernel's own kexec_file loader does it (no seed until
the RNG is initialized, never the running kernel's old seed, never waited for).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os


def kernel_random(length):
    """``length`` fresh bytes from the kernel's RNG, or None when it is not initialized yet.

    Kernels before getrandom(2) (3.17) get /dev/urandom's bytes.
    """
    getrandom = getattr(os, "getrandom", None)
    if getrandom is None:
        return os.urandom(length)
    try:
        return getrandom(length, os.GRND_NONBLOCK)
    except BlockingIOError:
        return None
    except OSError:
        return os.urandom(length)
