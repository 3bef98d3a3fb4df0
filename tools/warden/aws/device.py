"""What a device whose broker is AWS IoT Core gets: the ATS endpoint on 8883 as its broker, and
Amazon Root CA 1-4 (rootca.py) back to back in /identity/ca.der as its trust store in place of
the fleet CA (firmware/identity.py adds each to the TLS context). Its own certificate and key are
the same fleet-issued ones: `warden aws sync` registers them with AWS.

It must not talk to AWS (setup recorded the endpoint) nor decide which devices use AWS: the
`--broker aws` options of `warden device add` and `warden deploy` do.
"""
from __future__ import annotations

from pathlib import Path

from ..state import State
from . import project, rootca

PORT = 8883
CA_FILE = "/identity/ca.der"


def broker(state: State) -> dict:
    """The device config's broker: the account's ATS data endpoint (`warden aws setup` found it)."""
    return {"host": project.load(state).endpoint, "port": PORT}


def trust_store() -> bytes:
    """Amazon Root CA 1-4 as DER certificates back to back."""
    return b"".join(rootca.amazon_roots().values())


def trust_store_for(state: State, config: dict) -> bytes | None:
    """Amazon's roots when `config`'s broker is the project's AWS IoT endpoint, else None (the
    fleet CA stays): a deploy looks at the config it writes, so its CA always matches it."""
    host = (config.get("broker") or {}).get("host")
    if not host or not project.path(state).exists():
        return None
    return trust_store() if host == project.load(state).endpoint else None


def provision_twin(state: State, thing: str) -> Path:
    """Point THING's twin flash (made by `warden device add`) at AWS IoT: its config's broker and
    its trust store. Its identity and log stay. The twin cannot reach AWS from a test machine;
    the flash is what a board would get, for inspection and `warden twin run` on a host that can."""
    import json

    from ..board import flashimage, twin

    flash = twin.flash_path(state, thing)
    ff = flashimage.FlashFile(flash)
    cfg = json.loads(ff.read("/config.json"))
    cfg["broker"] = broker(state)
    ff.write({"/config.json": json.dumps(cfg, indent=1).encode(), CA_FILE: trust_store()})
    ff.save()
    return flash
