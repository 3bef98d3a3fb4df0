"""The one way the tests run a long-lived process: start it, capture its output lines on a reader
thread, wait for a line that matches (or for its exit) with a deadline, stop it as a user does
(Ctrl-C, then kill) or kill it as a power cut does.

Waits are on output or exit, always bounded, never a sleep: `wait_for` raises AssertionError with
the output so far when the deadline passes or the process ends first. The twin (twinproc.Twin),
a MicroPython program in the background (devrun.Background) and the serial board stand-in
(boardsim.BoardSim) are Processes; so are the CLI processes the integration tests start.
"""
import re
import signal
import subprocess
import threading
import time


class Output:
    """Lines a process printed, as they arrive, with bounded waits on them (thread-safe).

    A wait looks only at lines no earlier wait has looked at, so successive waits read the
    output in order. Notes (e.g. "--- reset ---") are kept in `lines` for the reader of a
    failure but never matched."""

    def __init__(self):
        self.lines = []
        self._notes = set()
        self._cond = threading.Condition()
        self._next = 0        # the first line no wait has looked at
        self._open = True
        self._partial = ""

    def add(self, line):
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    def feed(self, text):
        """Text as it comes (not necessarily whole lines); each complete line is added."""
        *whole, self._partial = (self._partial + text).split("\n")
        for line in whole:
            self.add(line.rstrip("\r"))

    def note(self, line):
        with self._cond:
            self._notes.add(len(self.lines))
            self.lines.append(line)

    def close(self):
        """The output ended: a wait for more fails at once."""
        with self._cond:
            if self._partial:
                self.lines.append(self._partial.rstrip("\r"))
                self._partial = ""
            self._open = False
            self._cond.notify_all()

    def reopen(self):
        """A new run starts: waits look only at what it prints."""
        with self._cond:
            self._next = len(self.lines)
            self._partial = ""
            self._open = True

    @property
    def text(self):
        return "\n".join(self.lines)

    def wait_for(self, pattern, timeout, what="the process", ended=lambda: "ended"):
        """The first new line matching `pattern` (a regex, searched); AssertionError at the
        deadline or when the output ends first (`ended()` says how, for the message)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._next < len(self.lines):
                    i = self._next
                    self._next += 1
                    m = None if i in self._notes else rx.search(self.lines[i])
                    if m:
                        return m
                if not self._open:
                    raise AssertionError("%s %s before /%s/; output:\n%s" % (what, ended(), pattern, self.text))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s never printed /%s/ within %ss; output:\n%s"
                                         % (what, pattern, timeout, self.text))
                self._cond.wait(left)


class Process:
    """A child process whose stdout and stderr (merged) are read line by line into `out`.

    `Process(argv, env=..., name=...).start()` runs argv; a subclass builds its own command
    (`command()`), its own way to start (`_popen()`) or read (`_pump()`, which sets the
    process's `drained` and closes `out` at its end), or starts another process in place of
    one that exited (`_restart()`, e.g. a twin's reset)."""

    name = "process"

    def __init__(self, argv=None, *, env=None, cwd=None, name=None, stdin=None, start_new_session=False):
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.stdin = stdin
        self.start_new_session = start_new_session
        if name:
            self.name = name
        self.proc = None
        self.out = Output()
        self.started = None
        self._reader = None
        self._stopping = False

    # -- starting and reading --------------------------------------------------------------------
    def command(self):
        """(argv, env) of the process to start."""
        return self.argv, self.env

    def _popen(self):
        argv, env = self.command()
        return subprocess.Popen(argv, env=env, cwd=self.cwd, stdin=self.stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=self.start_new_session)

    def _spawn(self):
        proc = self._popen()
        proc.drained = threading.Event()   # set by the reader once all it printed is in `out`
        return proc

    def start(self):
        if self._reader is not None:
            # the previous run's reader must be done: its end of output would close this run's
            self._reader.join(timeout=10)
        self._stopping = False
        self.out.reopen()
        self.started = time.monotonic()
        self.proc = self._spawn()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        return self

    def _pump(self):
        while True:
            proc = self.proc
            for line in proc.stdout:
                self.out.add(line.rstrip("\n"))
            code = proc.wait()
            proc.drained.set()
            if self._stopping or not self._restart(code):
                break
        self.out.close()

    def _restart(self, code):
        """Called when the process exited with `code`: start another in its place (self.proc)
        and return True to read on, or return False (the output then ends)."""
        return False

    # -- what it printed ----------------------------------------------------------------------
    @property
    def lines(self):
        return self.out.lines

    @property
    def output(self):
        return self.out.text

    def wait_for(self, pattern, timeout=10.0):
        """The first new output line matching `pattern` (a regex, searched): a re.Match whose
        .string is the line. AssertionError at the timeout or if the process ends first."""
        return self.out.wait_for(pattern, timeout, self.name, self._ended)

    def expect(self, prefix, timeout=10.0):
        """The first new line starting with `prefix` (a string or a tuple of them)."""
        prefixes = (prefix,) if isinstance(prefix, str) else prefix
        return self.wait_for("^(?:%s)" % "|".join(map(re.escape, prefixes)), timeout).string

    def _ended(self):
        return "exited (code %s)" % (self.proc.poll() if self.proc else None)

    # -- its end ------------------------------------------------------------------------------
    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout=30.0):
        """Its exit code, once it has exited and all it printed is in `output`;
        subprocess.TimeoutExpired if it is still running at the timeout."""
        proc = self.proc
        code = proc.wait(timeout=timeout)
        proc.drained.wait(5)
        return code

    def stop(self, sig=signal.SIGINT, timeout=10):
        """Ctrl-C (or `sig`), as a user stops it; killed if it has not exited within `timeout`.
        Returns the exit code."""
        self._stopping = True
        if self.running:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self._reap()

    def kill(self):
        """kill -9: a power cut."""
        self._stopping = True
        if self.running:
            self.proc.kill()
        return self._reap()

    def _reap(self):
        if self.proc is None:
            return None
        code = self.proc.wait()
        self.proc.drained.wait(5)
        return code
