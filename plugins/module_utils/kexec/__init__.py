# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fleetboot.kexec loader: a userspace kexec loader in pure Python (stdlib only).

Data flows one way: request -> host -> image -> plan -> purgatory -> syscall.
Nothing before the syscall step touches the running kernel.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type
