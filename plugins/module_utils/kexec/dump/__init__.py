# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a crash dump in the capture kernel (vmcore, the kernel log) and saving it (save-vmcore)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

#: Defaults of the capture kernel's commands (dump/commands.py) and of save.py.
DEFAULT_VMCORE = "/proc/vmcore"
DEFAULT_DEST = "/var/crash"
DEFAULT_DUMP_LEVEL = 31
MAKEDUMPFILE_MODES = ("auto", "always", "never")
