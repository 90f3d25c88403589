"""Stand-ins for makedumpfile and ssh, installed as executables on a test's PATH.

The fake makedumpfile does what save-vmcore and the dump server rely on, in its own simple way
(its "dump" is a marker and the zlib-compressed source; the flattened format is written and read
here without the module under test): ``-v`` with the features in $FAKE_MDF_FEATURES, ``-d N
[-F] SRC [DST]``, ``-R DST`` and ``--dump-dmesg SRC DST``.  Every call is logged as a JSON line
in $FAKE_MDF_LOG; $FAKE_MDF_FAIL makes the dump fail with that exit code and a message, $FAKE_MDF_SLOW makes it
sleep first.

The fake ssh runs the dump server's receiver (receive.py as installed on a server: the file
alone, beside flat.py) locally with the request as SSH_ORIGINAL_COMMAND, as the forced command
would; $FAKE_SSH_DOWN makes it fail to connect, $FAKE_SSH_CUT cuts the stream after that many
bytes of stdin.
"""

import os
import shutil
import stat
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DUMP = os.path.join(REPO, "plugins", "module_utils", "kexec", "dump")
MARK = b"FAKEKDUMP"

FAKE_MAKEDUMPFILE = r'''#!%(python)s
import json, os, struct, sys, zlib
args = sys.argv[1:]
if os.environ.get("FAKE_MDF_LOG"):
    with open(os.environ["FAKE_MDF_LOG"], "a") as f:
        f.write(json.dumps(args) + "\n")
if args == ["-v"]:
    feats = os.environ.get("FAKE_MDF_FEATURES", "lzo").split(",")
    print("makedumpfile: version 1.7.2 (released on 20 Oct 2022)")
    for name in ("lzo", "snappy", "zstd"):
        print("%%s\t%%s" %% (name, "enabled" if name in feats else "disabled"))
    print()
    sys.exit(0)
if args[:1] == ["--dump-dmesg"]:
    with open(args[2], "w") as f:
        f.write(os.environ.get("FAKE_MDF_DMESG", "[  215.849618] sysrq: Trigger a crash\n"))
    sys.exit(0)
if args[:1] == ["-R"]:
    data = sys.stdin.buffer.read()
    if data[:12] != b"makedumpfile" or struct.unpack(">qq", data[16:32]) != (1, 1):
        sys.stderr.write("read_start_flat_header: Can't get type of flattened format.\n")
        sys.exit(1)
    pos = 4096
    with open(args[1], "wb") as out:
        while True:
            if pos + 16 > len(data):
                sys.stderr.write("rearrange_dumpdata: Can't get data header of flattened format.\n")
                sys.exit(1)
            off, size = struct.unpack(">qq", data[pos:pos + 16])
            pos += 16
            if off == -1:
                break
            if pos + size > len(data):
                sys.stderr.write("rearrange_dumpdata: Can't get data of flattened format.\n")
                sys.exit(1)
            out.seek(off)
            out.write(data[pos:pos + size])
            pos += size
    sys.exit(0)
if os.environ.get("FAKE_MDF_FAIL"):
    sys.stderr.write("makedumpfile: %%s\n" %% os.environ.get("FAKE_MDF_MESSAGE", "unsupported kernel"))
    sys.exit(int(os.environ["FAKE_MDF_FAIL"]))
if os.environ.get("FAKE_MDF_SLOW"):  # a long dump, for the free-space watchdog
    import time
    time.sleep(float(os.environ["FAKE_MDF_SLOW"]))
flatten = "-F" in args
rest = [a for a in args if a not in ("-F", "-c", "-l", "-p", "-z")]
level = rest[rest.index("-d") + 1]
files = [a for a in rest if a not in ("-d", level)]
with open(files[0], "rb") as f:
    body = MARK + zlib.compress(f.read())
if not flatten:
    with open(files[1], "wb") as f:
        f.write(body)
    sys.exit(0)
out = sys.stdout.buffer
out.write((b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)).ljust(4096, b"\0"))
half = len(body) // 2
for off in (half, 0):  # out of order, as makedumpfile writes its headers last
    piece = body[off:] if off else body[:half]
    out.write(struct.pack(">qq", off, len(piece)) + piece)
out.write(struct.pack(">qq", -1, -1))
''' .replace("MARK", repr(MARK))

FAKE_SSH = r'''#!%(python)s
import os, subprocess, sys
if os.environ.get("FAKE_SSH_LOG"):
    with open(os.environ["FAKE_SSH_LOG"], "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\n")
if os.environ.get("FAKE_SSH_DOWN"):
    sys.stderr.write("ssh: connect to host 10.0.2.2 port 2222: Connection refused\n")
    sys.exit(255)
request = sys.argv[-1]
env = dict(os.environ, SSH_ORIGINAL_COMMAND=request)
argv = [sys.executable, os.environ["FAKE_RECEIVER"], "--dest", os.environ["FAKE_SERVER_DEST"]]
if os.environ.get("FAKE_SERVER_KEEP"):
    argv += ["--keep", os.environ["FAKE_SERVER_KEEP"]]
cut = int(os.environ.get("FAKE_SSH_CUT", "0"))
if not cut:
    os.execve(sys.executable, argv, env)
proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE)
sent = 0
while sent < cut:
    data = sys.stdin.buffer.read(min(65536, cut - sent))
    if not data:
        break
    proc.stdin.write(data)
    sent += len(data)
proc.stdin.close()  # the connection drops
proc.wait()
sys.stderr.write("client_loop: send disconnect: Broken pipe\n")
sys.exit(255)
'''


def _install(bindir, name, text):
    path = os.path.join(str(bindir), name)
    with open(path, "w") as f:
        f.write(text % {"python": sys.executable})
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def install_makedumpfile(bindir):
    return _install(bindir, "makedumpfile", FAKE_MAKEDUMPFILE)


def install_receiver(directory):
    """receive.py and flat.py alone in ``directory``, as the kdump role installs them on a server."""
    os.makedirs(str(directory), exist_ok=True)
    for name in ("receive.py", "flat.py"):
        shutil.copy(os.path.join(DUMP, name), os.path.join(str(directory), name))
    return os.path.join(str(directory), "receive.py")


def install_ssh(bindir):
    return _install(bindir, "ssh", FAKE_SSH)


def rebuild_fake_dump(data):
    """The source bytes a fake makedumpfile dump was made of."""
    import zlib  # pylint: disable=import-outside-toplevel
    assert data.startswith(MARK), data[:16]
    return zlib.decompress(data[len(MARK):])
