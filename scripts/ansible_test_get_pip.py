"""Stand-in for the pip bootstrap script ansible-test downloads for its sanity venvs.

That download comes from a host CI cannot reach; the same job is done here with the
interpreter's own ensurepip, then a normal `pip install` of what ansible-test asked for
(from the package index, like every other requirement). scripts/sanity.sh puts this file
where ansible-test looks for its cached copy.
"""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"],
                      stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q"] + args)
