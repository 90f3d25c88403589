"""The connection and task an action plugin is built with, faked for the action tests."""


class FakeShell:
    tmpdir = None


class FakeConnection:
    def __init__(self, transport="ssh"):
        self.transport = transport
        self._shell = FakeShell()
        self.options = {"timeout": 10, "ssh_extra_args": ""}
        self.resets = 0

    def reset(self):
        self.resets += 1

    def get_option(self, name):
        return self.options[name]

    def set_option(self, name, value):
        self.options[name] = value


class FakeTask:
    def __init__(self, action, args, check_mode=False):
        self.args = args
        self.check_mode = check_mode
        self.async_val = 0
        self.action = action
