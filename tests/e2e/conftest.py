"""Lab fixtures: a VM fleet brought up once per test session (per xdist worker).

The fleet's QEMU processes die with the test process (PR_SET_PDEATHSIG), and the finalizer
takes the fleet down, so nothing is left running after a failed or interrupted run.
"""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from lab.fleet import Fleet  # noqa: E402  (needs the repository on sys.path)
from lab.image import LabError  # noqa: E402

BIN = os.path.dirname(sys.executable)


def pytest_xdist_make_scheduler(config, log):
    """Longest lab file first, nothing queued behind a busy worker (see scheduling.py)."""
    if config.getoption("dist") != "loadfile":
        return None
    from .scheduling import LongestFileFirst  # pylint: disable=import-outside-toplevel  # controller only
    return LongestFileFirst(config, log)


def _require_lab():
    missing = [c for c in ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4")
               if shutil.which(c) is None]
    if missing:
        pytest.fail("lab tools missing (%s): run `make deps`" % ", ".join(missing))


def _starter(worker_id, fleets):
    def start(name, **kwargs):
        fleet = Fleet("e2e-%s-%s" % (worker_id, name))
        if fleet.exists():  # leftovers of an interrupted run
            fleet.down()
        try:
            fleet.up(die_with_parent=True, **kwargs)
        except LabError as e:
            pytest.fail(str(e))
        fleets.append(fleet)
        return fleet
    return start


@pytest.fixture(scope="module")
def fleet_factory(worker_id):
    """Start fleets named after the xdist worker; they are taken down when the test module ends,
    so idle VMs of finished modules do not take CPU from the next ones (TCG, 2 cores)."""
    _require_lab()
    fleets = []
    yield _starter(worker_id, fleets)
    for fleet in fleets:
        fleet.down()


@pytest.fixture(scope="session")
def lab_fleet(worker_id):
    """Two VMs on the lab image's older kernel, brought up once per session (per worker)."""
    _require_lab()
    fleets = []
    yield _starter(worker_id, fleets)("basic", hosts=2)
    for fleet in fleets:
        fleet.down()


def ansible(fleet, *args, timeout=300):
    """Run an ad-hoc `ansible` command against a fleet's generated inventory."""
    cmd = [os.path.join(BIN, "ansible"), "-i", fleet.inventory] + list(args)
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout, env=env, check=False)
