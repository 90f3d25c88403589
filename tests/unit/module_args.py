"""patch_module_args for running a module's main() in-process: ansible-core's own (2.19+), else
the same thing for older releases (the arguments a module reads at start-up, swapped in and back)."""

import contextlib
import json

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args  # noqa: F401  pylint: disable=unused-import
except ImportError:  # ansible-core < 2.19

    @contextlib.contextmanager
    def patch_module_args(args=None):
        from ansible.module_utils.common.text.converters import to_bytes  # pylint: disable=import-outside-toplevel
        old = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = old
