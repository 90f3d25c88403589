"""How `make e2e` spreads the lab test files over its pytest-xdist workers.

Each file boots its own fleet (module fixtures), so a file is the unit of work, as with
``--dist loadfile``.  Two things differ from xdist's own loadfile scheduler, because lab files
last from one minute to a quarter of an hour:

- the longest files start first (longest-processing-time order), so that no quarter-hour file
  starts on one worker while the other has nothing left to do;
- a worker is given its next file only when it is running the last test of its current one, so
  no file waits in one worker's queue while another worker is free.

The minutes are rough measurements of `make test` under TCG on 2 cores (2 workers, fleet boot
included). They only order the work: a wrong number costs time, never a result.
"""

import os

from xdist.scheduler import LoadFileScheduling

LAB_MINUTES = {
    "test_kdump_ssh.py": 16,
    "test_kdump_file.py": 15,
    "test_kdump_ppc64le.py": 14,
    "test_kdump_classic.py": 13,
    "test_upgrade_playbook.py": 12,   # one VM of each architecture
    "test_kdump_arm64.py": 12,
    "test_kexec_reboot.py": 10,
    "test_molecule_kdump.py": 9,
    "test_kexec_ppc64le.py": 8,
    "test_kexec_arm64.py": 7,
    "test_kexec_x86_64.py": 4,        # three jumps on one VM: 2 minutes alone, about 4 beside another file
    "test_molecule_default.py": 6,
}


def file_minutes(scope, tests):
    """Estimated minutes of one work unit (``scope`` is the file's node id): a file not in
    LAB_MINUTES counts a minute for its fleet's boot and one per test."""
    return LAB_MINUTES.get(os.path.basename(scope), 1.0 + tests)


class LongestFileFirst(LoadFileScheduling):
    """loadfile with the longest file first and no work queued behind a busy worker."""

    def _assign_work_unit(self, node):
        # max() keeps the first of equals, so ties stay in xdist's order.
        scope = max(self.workqueue, key=lambda s: file_minutes(s, len(self.workqueue[s])))
        self.workqueue.move_to_end(scope, last=False)
        super()._assign_work_unit(node)

    def _reschedule(self, node):
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        # One pending test is the one running now: hand over the next file just in time.
        if self._pending_of(self.assigned_work[node]) > 1:
            return
        self._assign_work_unit(node)
