"""A device twin process for tests: start it, wait for what it logs, stop it."""
import queue
import re
import signal
import subprocess
import threading
import time

from warden.board import twin as twinlib


class Twin:
    def __init__(self, flash, heap=twinlib.DEFAULT_HEAP, restart_on_reset=True):
        self.flash = flash
        self.heap = heap
        self.restart_on_reset = restart_on_reset  # as `warden twin run` and a board do
        self.resets = 0
        self.lines = []
        self._q = queue.Queue()
        self.proc = None
        self._stopping = False
        self._pumping = None  # the thread reading the current run's output

    def start(self, reset_cause=twinlib.RESET_PWRON):
        if self._pumping is not None:
            # The previous run's reader must have finished: its end-of-output mark would
            # otherwise land in the new run's queue.
            self._pumping.join(timeout=10)
        self._stopping = False
        self._q = queue.Queue()
        self.started = time.monotonic()
        self._spawn(reset_cause)
        self._pumping = threading.Thread(target=self._pump, daemon=True)
        self._pumping.start()
        return self

    def _spawn(self, reset_cause):
        argv, env = twinlib.twin_command(self.flash, self.heap, reset_cause)
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)

    def _pump(self):
        while True:
            proc = self.proc
            for line in proc.stdout:
                line = line.rstrip("\n")
                self.lines.append(line)
                self._q.put(line)
            if proc.wait() == twinlib.RESET_EXIT and self.restart_on_reset and not self._stopping:
                self.resets += 1
                self.lines.append("--- reset ---")
                self._spawn(twinlib.RESET_SOFT)
                continue
            break
        self._q.put(None)

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, pattern, timeout=10.0):
        """The first new output line matching `pattern` (a regex); AssertionError at the timeout."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._q.get(timeout=max(0.0, left))
            except queue.Empty:
                line = None
                left = 0
            if line is None and left <= 0:
                raise AssertionError("twin never printed /%s/ within %ss; output:\n%s" % (pattern, timeout, self.output))
            if line is None:  # process ended
                raise AssertionError("twin exited (code %s) before /%s/; output:\n%s"
                                     % (self.proc.wait(), pattern, self.output))
            m = rx.search(line)
            if m:
                return m

    def wait_exit(self, timeout=30.0):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        """Ctrl-C, as a user stops it; kill if it does not exit."""
        self._stopping = True
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        """kill -9: a power cut."""
        self._stopping = True
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
