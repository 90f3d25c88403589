"""Run one molecule scenario as an e2e test, so that it shares the xdist workers with the other
lab files instead of running after them (`make molecule` still runs them all on their own)."""

import os
import re
import subprocess

from .conftest import BIN, REPO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Where a collection keeps its scenarios (molecule finds them there by itself; said once here).
SCENARIOS = "extensions/molecule/*/molecule.yml"


def run_scenario(name, timeout=1800):
    """`molecule test -s NAME` from the repository root; asserts every action succeeded."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), NO_COLOR="1", PY_COLORS="0",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               MOLECULE_GLOB=SCENARIOS)
    proc = subprocess.run([os.path.join(BIN, "molecule"), "test", "-s", name], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=timeout, check=False)
    out = ANSI.sub("", proc.stdout)
    assert proc.returncode == 0, out[-8000:]
    recap = re.search(r"^%s\s*:\s*actions=(\d+)\s+successful=(\d+).*\bfailed=(\d+)" % re.escape(name), out, re.M)
    assert recap, out[-8000:]
    actions, successful, failed = (int(g) for g in recap.groups())
    assert actions > 0 and successful == actions and failed == 0, out[-8000:]
    return out
