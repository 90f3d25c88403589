"""fleetboot.kexec loader: a userspace kexec loader in pure Python (stdlib only).

Data flows one way: request -> host -> image -> plan -> purgatory -> syscall.
Nothing before the syscall step touches the running kernel.
"""
