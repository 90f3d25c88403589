# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Crash (kdump) loads: the facts, the ELF core header, the fit check, and what a crash
preparation hands back to the loader.  What differs per architecture (the x86 backup region and
capture e820, the arm64 and ppc64 device-tree properties) lives in ``arch/<arch>/crash.py``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class CrashSetup:
    """What prepare() added to a crash plan: plain values for the plan report."""

    def __init__(self, cmdline, memory_map, backup, elfcorehdr_addr, elfcorehdr_size, loads, notes, warnings):
        self.cmdline = cmdline
        self.memory_map = memory_map
        self.backup = backup
        self.elfcorehdr_addr = elfcorehdr_addr
        self.elfcorehdr_size = elfcorehdr_size
        self.loads = loads
        self.notes = notes
        self.warnings = warnings

    def to_dict(self):
        return {"elfcorehdr": {"addr": self.elfcorehdr_addr, "size": self.elfcorehdr_size},
                "backup": None if not self.backup else {"src": self.backup[0], "dst": self.backup[1], "len": self.backup[2]},
                "pt_load": [dict(d) for d in self.loads], "pt_note": [{"addr": a, "size": s} for a, s in self.notes],
                "memory_map": [r.to_dict() for r in self.memory_map]}
