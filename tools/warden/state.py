"""The project state folder: PKI, device registry, policy, broker files, per-device files.

It knows paths, settings and how to write a file safely: it must not read or interpret what
the other modules keep in the folder (the PKI, the registry, the policy are theirs).

Everything the host tools keep lives under one folder. The CLI's `--state` option, then the
`WARDEN_STATE` environment variable, choose it; otherwise it is found as git finds its
repository: the first `.warden/` holding a Warden state, from the current directory upwards
(`locate`), and `./.warden` when there is none (a first set-up). A command run from a
sub-folder of a project so reaches that project's fleet, not an empty one of its own, and the
commands that make fleet-wide secrets refuse to make a second fleet beside a found one
(`refuse_second_fleet`) unless the folder was named explicitly. The folder and every folder inside it are created with mode 0700; private keys are
written with mode 0600, atomically (temporary file + rename), so a crash never leaves a
half-written key behind.

Layout::

    <root>/project.json     settings (app name, broker host and port)
    <root>/pki/             fleet CA, broker and role certificates, CRL
    <root>/registry.sqlite  device registry
    <root>/policy.json      roles and their topic rules
    <root>/broker/          generated mosquitto.conf, ACL, broker log
    <root>/devices/<thing>/ cert.der, key.der (and whatever the twin keeps)
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

from .errors import WardenError

DEFAULT_ROOT = ".warden"
ENV_VAR = "WARDEN_STATE"

# Files only a Warden state holds: a `.warden/` with none of them (someone's empty folder) is
# passed over by the search.
STATE_MARKERS = ("project.json", "pki", "registry.sqlite")

# How a State's folder was chosen (State.origin): the two explicit ones win over the search.
ORIGIN_OPTION = "--state"
ORIGIN_ENV = "$" + ENV_VAR
ORIGIN_FOUND = "found"
ORIGIN_DEFAULT = "default"
EXPLICIT = (ORIGIN_OPTION, ORIGIN_ENV)

DEFAULT_SETTINGS = {"app": "warden", "broker": {"host": "localhost", "port": 8883}}


class StateError(WardenError):
    hint = "fix or remove project.json in the state folder (--state / $WARDEN_STATE); `warden pki init` writes it"


def _merge(defaults, values):
    out = copy.deepcopy(defaults)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def ensure_dir(path: Path) -> Path:
    """Create `path` and any missing parents with mode 0700; return it."""
    path = Path(path)
    if not path.is_dir():
        missing = []
        p = path
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        # Path.mkdir(parents=True) would give the parents the default mode: create each one.
        for p in reversed(missing):
            try:
                p.mkdir(mode=0o700)
            except FileExistsError:
                pass
        if not path.is_dir():
            path.mkdir(mode=0o700)   # raises the right error (e.g. a file in the way)
    return path


def write_file(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically with the given mode (not subject to the umask)."""
    path = Path(path)
    ensure_dir(path.parent)
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_private(path: Path, data: bytes | str) -> Path:
    """Write a secret (private key, ...) atomically with mode 0600."""
    return write_file(path, data, 0o600)


def is_state(folder: Path) -> bool:
    """Does `folder` hold a Warden state (not just exist)?"""
    folder = Path(folder)
    return any((folder / m).exists() for m in STATE_MARKERS)


def find_state(start: Path | str | None = None) -> Path | None:
    """The first `.warden/` holding a Warden state in `start` (default: the current directory)
    or one of its parents, or None."""
    here = Path(start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / DEFAULT_ROOT
        if candidate.is_dir() and is_state(candidate):
            return candidate
    return None


class State:
    """The project state folder rooted at `root` (it need not exist yet). `origin` says how the
    folder was chosen (ORIGIN_*): a State made in code was chosen explicitly."""

    def __init__(self, root: Path | str, origin: str = ORIGIN_OPTION):
        self.root = Path(root)
        self.origin = origin
        self._settings = None

    @classmethod
    def default(cls, root: Path | str | None = None) -> "State":
        """`root` if given, else $WARDEN_STATE, else the state found from the current directory
        upwards, else `.warden` in the current directory."""
        if root is not None:
            return cls(root, ORIGIN_OPTION)
        return cls.locate()

    @classmethod
    def locate(cls, start: Path | str | None = None) -> "State":
        """$WARDEN_STATE if set, else the first state from `start` upwards, else `./.warden`."""
        env = os.environ.get(ENV_VAR)
        if env:
            return cls(env, ORIGIN_ENV)
        found = find_state(start)
        if found is not None:
            return cls(found, ORIGIN_FOUND)
        return cls(Path(start or ".") / DEFAULT_ROOT, ORIGIN_DEFAULT)

    def describe_origin(self) -> str:
        """How the folder was chosen, in words (for `warden status` and error hints)."""
        return {ORIGIN_OPTION: "given with --state", ORIGIN_ENV: f"from ${ENV_VAR}",
                ORIGIN_FOUND: "found from the current directory upwards",
                ORIGIN_DEFAULT: "the default: no state found from the current directory upwards",
                }.get(self.origin, self.origin)

    def __repr__(self):
        return f"State({str(self.root)!r})"

    # -- paths -----------------------------------------------------------------------------
    @property
    def project_path(self) -> Path:
        return self.root / "project.json"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.sqlite"

    @property
    def policy_path(self) -> Path:
        return self.root / "policy.json"

    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    @property
    def devices_dir(self) -> Path:
        return self.root / "devices"

    def device_dir(self, thing: str) -> Path:
        """Folder of one device's files. The name is validated, so it can never escape the folder."""
        from .fleet.names import validate_thing

        return self.devices_dir / validate_thing(thing)

    def exists(self) -> bool:
        return self.project_path.exists()

    def refuse_second_fleet(self, what: str) -> None:
        """Before making a fleet-wide secret (`what`: a CA, a signing key) in a folder that was
        not named explicitly: refuse (StateError) when it would start a second fleet by accident,
        that is when a Warden state exists in a parent directory, or when the folder holds no
        state yet but `what` is not the start of a fleet (a signing key with no CA beside it:
        a key no device trusts). `--state` / $WARDEN_STATE say "on purpose"."""
        if self.origin in EXPLICIT:
            return
        root = self.root.absolute()
        above = find_state(root.parent.parent)
        if above is not None and above.resolve() != root.resolve():
            raise StateError(
                f"refusing to make {what} in {root}: the Warden state {above} is in a parent directory",
                hint=f"commands run below {above.parent} use that fleet; to make a second fleet here on "
                     f"purpose, name its folder: warden --state {root} ...")
        if what != "a fleet CA" and not is_state(root):
            raise StateError(
                f"no Warden state in {root} or any parent directory: refusing to make {what} "
                "that no device of your fleet would trust",
                hint="run this where your fleet lives (the folder holding .warden/), or name it with "
                     "--state DIR; a new fleet starts with `warden pki init`")

    def ensure(self) -> "State":
        """Create the folder (0700) and project.json with default settings if missing."""
        ensure_dir(self.root)
        if not self.project_path.exists():
            self._write_settings(copy.deepcopy(DEFAULT_SETTINGS))
        return self

    # -- settings --------------------------------------------------------------------------
    @property
    def settings(self) -> dict:
        """The settings in project.json merged over the defaults (a copy: use `set` to change)."""
        if self._settings is None:
            values = {}
            if self.project_path.exists():
                try:
                    values = json.loads(self.project_path.read_text())
                except (OSError, ValueError) as e:
                    raise StateError(
                        f"cannot read {self.project_path}: {e}",
                        hint="fix or delete the file (defaults are used when it is missing)",
                    ) from e
                if not isinstance(values, dict):
                    raise StateError(f"{self.project_path} must hold a JSON object")
            self._settings = _merge(DEFAULT_SETTINGS, values)
        return copy.deepcopy(self._settings)

    def _write_settings(self, values: dict):
        write_file(self.project_path, json.dumps(values, indent=2, sort_keys=True) + "\n")
        self._settings = _merge(DEFAULT_SETTINGS, values)

    def set(self, key: str, value) -> None:
        """Set one setting by dotted key (`app`, `broker.host`, `broker.port`) and save it."""
        values = self.settings
        if key == "app":
            from .fleet.names import validate_app

            value = validate_app(value)
        elif key == "broker.port":
            value = int(value)
            if not 0 < value < 65536:
                raise StateError(f"broker.port must be 1..65535, not {value}")
        elif key == "broker.host":
            value = str(value)
            if not value or any(c.isspace() for c in value):
                raise StateError(f"broker.host {value!r} is not a host name")
        else:
            raise StateError(f"unknown setting {key!r}", hint="settings: app, broker.host, broker.port")
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        ensure_dir(self.root)
        self._write_settings(values)

    @property
    def app(self) -> str:
        return self.settings["app"]

    @app.setter
    def app(self, value: str):
        self.set("app", value)

    @property
    def broker_host(self) -> str:
        return self.settings["broker"]["host"]

    @broker_host.setter
    def broker_host(self, value: str):
        self.set("broker.host", value)

    @property
    def broker_port(self) -> int:
        return int(self.settings["broker"]["port"])

    @broker_port.setter
    def broker_port(self, value: int):
        self.set("broker.port", value)
