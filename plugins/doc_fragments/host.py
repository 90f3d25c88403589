# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation the collection's modules share (extends_documentation_fragment)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Every module: Linux hosts, as root. Use with ansible.builtin.action_common_attributes.
    DOCUMENTATION = r"""
options: {}
attributes:
  platform:
    support: full
    platforms: posix
notes:
  - Needs root on the host (C(become=true) for other users).
  - In the action group C(fleetboot.kexec.kexec) with every module of the collection. Defaults set
    for it with C(module_defaults) reach all of them, so give only options that all of them accept.
"""

    # kexec_facts, kexec_load: the module reads the host from a tree that tests can replace.
    SYSROOT = r"""
options:
  sysroot:
    description:
      - Root of the host tree the module reads the host's state from (C(/proc), C(/sys), C(/boot))
        and keeps its records under (C(/run/fleetboot-kexec)). Only tests change it, to run against a
        recorded host tree.
      - Paths given in other options are B(not) relative to it; paths the module returns include it.
    type: path
    default: /
"""

    # kexec_reboot, kdump_crash: action plugins that wait while the host is down.
    WAIT = r"""
options:
  connect_timeout:
    description:
      - Seconds each connection attempt may take while the host is going down and coming back (sets
        the connection plugin's C(timeout) option, or C(connection_timeout), for the duration of the
        task).
      - By default the connection plugin's own setting is kept.
    type: int
notes:
  - Also in the action group C(fleetboot.kexec.wait), the actions that wait for a host to come back
    (M(fleetboot.kexec.kexec_reboot) and M(fleetboot.kexec.kdump_crash)), so C(module_defaults) for
    C(group/fleetboot.kexec.wait) can set O(connect_timeout) for both.
  - Refuses to run with the C(local) connection, which would take the controller down.
  - Every answer is read on a fresh connection, so a persistent SSH connection from before the
    reboot is never taken for the host. The C(ssh) connection also gets SSH keepalives for the
    task, so that a host that disappears without closing its connections is noticed.
"""
