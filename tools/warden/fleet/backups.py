"""Backups of the device registry, and putting one back.

It copies and restores the registry file only: it must not decide when a backup is due (the
operations that replace secrets call `backup_registry` first: device add --replace, rotate,
revoke, principal rotate/revoke, pki init --force) and must not read what a backup holds
beyond opening it as a registry.

A backup is a consistent copy made with sqlite's online backup API (Registry.backup_to) into
`<state>/backups/registry-<UTC time>-<why>.sqlite`, mode 0600 (it holds every device's log key,
as the registry does). The newest KEEP are kept, so the folder stays bounded however many
operations run. `restore` checks the backup opens as a registry, moves the registry it replaces
(damaged or not) with its WAL file into the backups folder as `replaced-<UTC time>.sqlite`, and
removes the shared-memory file: both belong to the replaced file, and sqlite would apply a stale
WAL to the restored one.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

from ..errors import WardenError
from ..state import State, ensure_dir
from .registry import BACKUP_DIR, Registry

KEEP = 20
_PREFIX = "registry-"
_WHY = re.compile(r"[^a-z0-9-]+")


class BackupError(WardenError):
    pass


def backups_dir(state: State) -> Path:
    return state.root / BACKUP_DIR


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def list_backups(state: State) -> list:
    """The registry backups, newest first (the stamp in the name sorts by time)."""
    folder = backups_dir(state)
    if not folder.is_dir():
        return []
    return sorted(folder.glob(_PREFIX + "*.sqlite"), reverse=True)


def backup_registry(state: State, why: str) -> Path | None:
    """Copy the registry before an operation that replaces secrets; returns the copy (None when
    there is no registry yet). A damaged registry raises RegistryError: the operation must not run
    on it, and a copy of it would push a good backup out."""
    if not state.registry_path.exists():
        return None
    dest = backups_dir(state) / f"{_PREFIX}{_stamp()}-{_WHY.sub('-', why.lower()).strip('-')[:40]}.sqlite"
    with Registry(state.registry_path) as reg:
        reg.backup_to(dest)
    for old in list_backups(state)[KEEP:]:
        old.unlink(missing_ok=True)
    return dest


def restore(state: State, backup: Path | str | None = None) -> tuple:
    """Put `backup` (default: the newest) back as the registry; returns (backup, where the replaced
    registry was moved or None, the devices the restored one lists). BackupError when there is no
    backup or it does not open as a registry."""
    if backup is None:
        found = list_backups(state)
        if not found:
            raise BackupError(f"no registry backup in {backups_dir(state)}",
                              hint="backups are made before each operation that replaces secrets; "
                                   "without one the registry cannot be restored by warden")
        backup = found[0]
    backup = Path(backup)
    if not backup.is_file():
        raise BackupError(f"no backup {backup}", hint="`warden device restore --list` shows the backups")
    try:
        with Registry(backup) as reg:
            devices = reg.count()
    except WardenError as e:
        raise BackupError(f"the backup {backup} cannot be used: {e}",
                          hint="choose an older one: `warden device restore --list`") from None
    reg_path = state.registry_path
    moved = None
    if reg_path.exists():
        moved = ensure_dir(backups_dir(state)) / f"replaced-{_stamp()}.sqlite"
        os.replace(reg_path, moved)
        wal = Path(str(reg_path) + "-wal")
        if wal.exists():   # its writes not yet checkpointed: they go with it
            os.replace(wal, Path(str(moved) + "-wal"))
    Path(str(reg_path) + "-shm").unlink(missing_ok=True)
    Path(str(reg_path) + "-wal").unlink(missing_ok=True)
    tmp = reg_path.with_name("." + reg_path.name + ".restore")
    with Registry(backup) as reg:
        reg.backup_to(tmp)
    os.replace(tmp, reg_path)
    return backup, moved, devices
