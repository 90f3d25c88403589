"""Host-side timestamps for a VM's serial console.

QEMU appends what the guest prints to the VM's serial log as it is printed; a reader that polls the
file every few milliseconds stamps each line with the host's clock when it appeared. That clock
runs across firmware resets and kexec jumps alike, so phases that span two kernels (shutdown,
purgatory, firmware, boot) can be measured on one timeline, which no guest clock allows.
"""

import re
import threading
import time

#: How often the log is polled: the timestamps are this precise (the phases measured are seconds).
POLL_SECONDS = 0.02


class ConsoleWatch:
    """Tail ``path`` from its current end in a thread; ``lines`` is [(host time, text)]."""

    def __init__(self, path, clock=time.monotonic):
        self.path = path
        self.clock = clock
        self.lines = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                self._offset = f.tell()
        except OSError:
            self._offset = 0
        self._thread = threading.Thread(target=self._run, name="console-watch", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self):
        partial = b""
        while not self._stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except OSError:
                data = b""
            if data:
                now = self.clock()
                self._offset += len(data)
                chunks = (partial + data).split(b"\n")
                partial = chunks.pop()
                with self._cond:
                    for chunk in chunks:
                        self.lines.append((now, chunk.decode("utf-8", "replace").rstrip("\r")))
                    self._cond.notify_all()
            self._stop.wait(POLL_SECONDS)

    def find(self, pattern, after=None):
        """(time, line) of the first line matching ``pattern`` (a regex) seen at or after the host
        time ``after``, or None."""
        rx = re.compile(pattern)
        with self._cond:
            for stamp, line in self.lines:
                if (after is None or stamp >= after) and rx.search(line):
                    return stamp, line
        return None

    def wait_for(self, pattern, after=None, timeout=300):
        """Like find(), waiting up to ``timeout`` seconds; None when it never appears."""
        deadline = time.monotonic() + timeout
        while True:
            hit = self.find(pattern, after)
            if hit is not None or time.monotonic() >= deadline:
                return hit
            with self._cond:
                self._cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))
