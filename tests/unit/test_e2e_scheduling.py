"""The e2e scheduler: longest lab file first, no file queued behind a busy worker; and every
molecule scenario has the e2e test file that runs it in `make test`."""

import glob
import os

from tests.e2e.scheduling import LongestFileFirst, file_minutes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeConfig:
    def getvalue(self, name):
        assert name == "tx"
        return ["2*popen"]


class FakeNode:
    """A worker as the scheduler sees it: it is sent test indices and runs them in order."""

    class gateway:  # pylint: disable=invalid-name  # xdist reads node.gateway.id
        id = "fake"

    def __init__(self, name):
        self.name = name
        self.shutting_down = False
        self.queue = []

    def send_runtest_some(self, indices):
        self.queue.extend(indices)

    def shutdown(self):
        self.shutting_down = True


COLLECTION = (["tests/e2e/test_kexec_reboot.py::test_%d" % i for i in range(4)]
              + ["tests/e2e/test_lab.py::test_a", "tests/e2e/test_lab.py::test_b",
                 "tests/e2e/test_kdump_classic.py::test_it", "tests/e2e/test_kdump_file.py::test_it",
                 "tests/e2e/test_kexec_file.py::test_it", "tests/e2e/test_molecule_kdump.py::test_it"])


def scheduled():
    """The scheduler after its first distribution of COLLECTION to two fake workers."""
    sched = LongestFileFirst(FakeConfig())
    nodes = [FakeNode("gw0"), FakeNode("gw1")]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, COLLECTION)
    sched.schedule()
    return sched, nodes


def simulate():
    """Run COLLECTION on two fake workers, each test taking its file's minutes / its test count;
    return [(worker, file, start minute)] in start order and each worker's finishing minute."""
    sched, nodes = scheduled()
    clock = {node: 0.0 for node in nodes}
    current = {node: None for node in nodes}
    starts = []
    while any(node.queue for node in nodes):
        node = min((n for n in nodes if n.queue), key=lambda n: clock[n])
        index = node.queue.pop(0)
        path = COLLECTION[index].split("::")[0]
        tests = sum(1 for nodeid in COLLECTION if nodeid.startswith(path + "::"))
        if current[node] != path:
            current[node] = path
            starts.append((node.name, os.path.basename(path), clock[node]))
        clock[node] += file_minutes(path, tests) / tests
        sched.mark_test_complete(node, index)
    assert not sched.workqueue and sched.tests_finished
    return starts, {node.name: clock[node] for node in nodes}


def test_the_two_longest_files_start_first_on_different_workers():
    starts, dummy_end = simulate()
    first = {worker: name for worker, name, minute in starts if minute == 0}
    assert sorted(first.values()) == ["test_kdump_classic.py", "test_kdump_file.py"]


def test_every_file_runs_once_and_the_workers_end_close_together():
    starts, end = simulate()
    files = [name for dummy_worker, name, dummy_minute in starts]
    assert sorted(files) == sorted(set(os.path.basename(n.split("::")[0]) for n in COLLECTION))
    total = sum(file_minutes(name, 1) for name in set(files))
    # Longest-first on two workers ends within the longest single file of the ideal half.
    assert max(end.values()) - total / 2 <= max(file_minutes(name, 1) for name in set(files)) / 2


def test_a_busy_worker_is_not_given_a_second_file_to_queue():
    sched, nodes = scheduled()
    # Each worker holds its first file and, since that file's last test is the one running, the
    # next one; nothing more, so the rest waits in the shared queue for whichever is free first.
    for node in nodes:
        assert len(sched.assigned_work[node]) == 2
    assert len(sched.workqueue) == len(set(n.split("::")[0] for n in COLLECTION)) - 4


def test_unknown_files_weigh_a_minute_for_the_boot_and_one_per_test():
    assert file_minutes("tests/e2e/test_new_thing.py", 3) == 4.0
    assert file_minutes("tests/e2e/test_kdump_file.py", 1) > file_minutes("tests/e2e/test_kexec_reboot.py", 4)


def test_every_molecule_scenario_runs_in_make_test():
    scenarios = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(REPO, "extensions", "molecule", "*", "molecule.yml")))
    assert scenarios, "no molecule scenarios found"
    for name in scenarios:
        path = os.path.join(REPO, "tests", "e2e", "test_molecule_%s.py" % name)
        assert os.path.exists(path), "molecule scenario %s has no e2e test file %s" % (name, path)
        with open(path) as f:
            assert 'run_scenario("%s")' % name in f.read(), path
