# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a crash dump in the capture kernel (vmcore, the kernel log) and saving it (save-vmcore)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type
