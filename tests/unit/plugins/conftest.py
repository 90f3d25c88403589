# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The guard every unit test runs under, in the repository and in an installed collection
(``ansible-test units``): the tests drive the loader through the fake syscall layer, and reaching
libc's syscall() or sync() fails the test instead of touching the kernel (tests may run as root)."""

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls


@pytest.fixture(autouse=True)
def no_real_syscalls(monkeypatch):
    """Every unit test: a real kexec syscall or sync() is a test failure, never a kexec."""
    def refuse(*args, **kwargs):
        raise AssertionError("a real syscall was attempted in a unit test")
    monkeypatch.setattr(syscalls.CtypesSyscalls, "_syscall", refuse)
    monkeypatch.setattr(syscalls.CtypesSyscalls, "_libc_sync", refuse)
