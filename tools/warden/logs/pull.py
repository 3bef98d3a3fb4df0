"""Getting a device's log onto the host and reading it: `warden logs pull` and `warden logs show`.

`pull` copies the segments out of a twin's flash (a board's come through warden.board.deploy's
`pull_logs`, then `save_pull`) into a folder with a pull.json manifest, and verifies them with the
registry's log key; `show` reads a pulled folder or a twin's flash. The newest record a pull saw
is remembered per device (log-mark.json), so a later pull reports a rollback or a cut tail.
Decoding and verifying is warden.logs.format's: this module must not parse segment bytes itself.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..state import ensure_dir
from .format import LogError, LogKeyError, LogReport, read_log

LOG_DIR = "/log"
MANIFEST = "pull.json"
MARK_FILE = "log-mark.json"


def read_dir(path) -> dict:
    """{name: bytes} of the segment files in a folder."""
    path = Path(path)
    if not path.is_dir():
        raise LogError(f"{path} is not a folder", hint="give a folder made by `warden logs pull`, or a thing name")
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name.endswith(".seg") and p.is_file()}


def read_flash(flash_path) -> dict:
    """{name: bytes} of the log segments in a twin's flash file (its littlefs /log folder)."""
    from ..board.flashimage import FlashFile
    flash_path = Path(flash_path)
    if not flash_path.exists():
        raise LogError(f"no twin flash at {flash_path}", hint="provision the device: warden device add THING")
    try:
        ff = FlashFile(flash_path)
    except Exception as e:
        raise LogError(f"cannot mount the filesystem of {flash_path}: {e}",
                       hint="has the twin booted once? a running twin may be mid-write: try again") from e
    if not ff.exists(LOG_DIR):
        return {}
    return {n: ff.read(f"{LOG_DIR}/{n}") for n in ff.listdir(LOG_DIR) if n.endswith(".seg")}


def device_key(state, thing) -> bytes:
    from ..fleet.devices import get_device
    dev = get_device(state, thing)
    if dev.log_key is None:
        raise LogKeyError(f"{thing} has no log key in the registry",
                          hint="devices provisioned before log keys existed need re-provisioning")
    return dev.log_key


def _mark_path(state, thing) -> Path:
    return Path(state.device_dir(thing)) / MARK_FILE


def load_mark(state, thing) -> dict | None:
    p = _mark_path(state, thing)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def save_mark(state, thing, report: LogReport):
    """Remember the newest record seen and its MAC (never lower it), so a later pull reports a
    rollback, and a cut tail even after the device wrote past it."""
    if report.store_id is None or report.last_seq is None:
        return
    old = load_mark(state, thing) or {}
    seq = report.last_seq
    tag = next((r.tag.hex() for r in report.records if r.seq == seq), None)
    if old.get("store_id") == report.store_id.hex() and (old.get("seq") or 0) > seq:
        seq, tag = old["seq"], old.get("tag")
    p = _mark_path(state, thing)
    ensure_dir(p.parent)
    p.write_text(json.dumps({"store_id": report.store_id.hex(), "seq": seq, "tag": tag}))


@dataclass
class PullResult:
    out: Path
    files: dict
    report: LogReport | None
    error: str | None = None


def pull(state, thing, out=None) -> PullResult:
    """Copy THING's log segments out of its twin flash into `out` (default devices/THING/logs).

    The folder gets exactly the segments and a pull.json manifest. With the registry's key the
    copy is verified as well, and the newest record seen is remembered for rollback checks."""
    from ..board.twin import flash_path
    from ..fleet.devices import get_device
    get_device(state, thing)
    files = read_flash(flash_path(state, thing))
    if not files:
        raise LogError(f"{thing}'s flash has no log segments in {LOG_DIR}",
                       hint="the device writes its log from its first boot with a log key (warden twin run)")
    return save_pull(state, thing, files, str(flash_path(state, thing)), out)


def save_pull(state, thing, files, source, out=None) -> PullResult:
    """Write pulled segments (`files`, from a twin or a board) and their manifest into `out`,
    then verify them with the registry's key; the device is named in pull.json for `show`."""
    out = Path(out) if out else Path(state.device_dir(thing)) / "logs"
    ensure_dir(out)
    for p in out.glob("*.seg"):
        p.unlink()
    for name, data in files.items():
        (out / name).write_bytes(data)
    manifest = {"thing": thing, "pulled": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "source": source,
                "segments": {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    report, error = None, None
    try:
        report = read_log(files, device_key(state, thing), load_mark(state, thing))
        save_mark(state, thing, report)
    except LogError as e:
        error = str(e)
    return PullResult(out, files, report, error)


def show(state, source, thing=None) -> tuple[str, LogReport]:
    """Read a log for display: `source` is a folder (from `pull`) or a thing name (its twin flash).

    Returns (thing, report). The key is the registry's key of `thing` (a folder's pull.json
    names it, or pass it)."""
    p = Path(source)
    if p.is_dir():
        if thing is None:
            try:
                thing = json.loads((p / MANIFEST).read_text())["thing"]
            except (OSError, ValueError, KeyError):
                raise LogError(f"{p} has no {MANIFEST} naming its device",
                               hint="say whose key decrypts it: --thing THING") from None
        files = read_dir(p)
        if not files:
            raise LogError(f"no log segments (*.seg) in {p}", hint="pull them: warden logs pull THING --out DIR")
    else:
        from ..board.twin import flash_path
        if thing is not None and thing != str(source):
            raise LogError(f"{source} is not a folder", hint="--thing names the key owner of a pulled folder")
        thing = str(source)
        from ..fleet.devices import get_device
        get_device(state, thing)
        files = read_flash(flash_path(state, thing))
        if not files:
            raise LogError(f"{thing}'s flash has no log segments in {LOG_DIR}",
                           hint="the device writes its log from its first boot with a log key")
    return thing, read_log(files, device_key(state, thing), load_mark(state, thing))
