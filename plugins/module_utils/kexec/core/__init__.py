# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The arch-neutral core of the loader: memory ranges, plans and the relocation model, ELF, device
trees, decompression, digests, initramfs checks, mapped files, fresh entropy."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type
