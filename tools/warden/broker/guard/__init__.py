"""The broker guard: warden's mosquitto plugin (warden_guard.c), built here on first use.

It only builds and finds the plugin: it must not configure or start a broker (server.py).

Every broker warden configures loads it: it enforces the identity rules the ACL file cannot
express (a name outside the policy gets nothing; a session of a principal gets its principal's
rules) and takes revocations at run time over `$CONTROL/warden/v1` (warden.broker.control). The C
source says why mosquitto's dynamic security plugin cannot do this with certificate identities.

Built with the system C compiler against mosquitto's plugin headers (Debian: mosquitto-dev), into
a folder next to this file (or ~/.cache/warden when that is read-only), keyed by the source's
hash so a changed source is rebuilt.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ...errors import WardenError

SOURCE = Path(__file__).with_name("warden_guard.c")
LIB_NAME = "warden_guard.so"
INSTALL_HINT = ("install a C compiler and mosquitto's plugin headers: sudo apt-get install gcc "
                "mosquitto-dev libmosquitto-dev (`make setup` does it)")


class GuardBuildError(WardenError):
    pass


def _build_dirs():
    yield Path(__file__).with_name("_build")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "warden"
    yield cache


def plugin_path() -> Path:
    """The compiled plugin (built now if needed)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    for folder in _build_dirs():
        lib = folder / f"warden_guard-{digest}.so"
        if lib.exists():
            return lib
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise GuardBuildError("no C compiler to build the broker guard plugin", hint=INSTALL_HINT)
    errors = []
    for folder in _build_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            errors.append(str(e))
            continue
        lib = folder / f"warden_guard-{digest}.so"
        tmp = folder / f".warden_guard-{digest}.{os.getpid()}.so"
        proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp), str(SOURCE)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            if "mosquitto" in proc.stderr and "No such file" in proc.stderr:
                raise GuardBuildError("mosquitto's plugin headers are missing: cannot build the broker guard",
                                      hint=INSTALL_HINT)
            errors.append(proc.stderr.strip()[-800:])
            continue
        os.replace(tmp, lib)
        return lib
    raise GuardBuildError("cannot build the broker guard plugin:\n" + "\n".join(errors), hint=INSTALL_HINT)
