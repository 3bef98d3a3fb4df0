"""`warden dashboard` on the host: its JSON against a real registry, monitor store and rollout store
filled through their APIs, over a real socket; its headers; the loopback's Host check; the refusal
to bind off the loopback without an active operator principal; and mutual TLS there (an active
operator's certificate admitted, a technician's, a revoked operator's and none refused)."""
import json
import ssl
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from support.dashboard import Running, fill
from warden.cli import main
from warden.dashboard.server import DashboardError, check_bind
from warden.fleet import pki
from warden.fleet.principals import add_principal, revoke_principal
from warden.monitor.store import Store as MonitorStore
from warden.rollout.store import Store as RolloutStore
from warden.state import State


@pytest.fixture
def st(tmp_path, monkeypatch):
    monkeypatch.delenv("WARDEN_STATE", raising=False)
    s = State(tmp_path / "st")
    s.ensure()
    fill(s)
    return s


@pytest.fixture(scope="module")
def pst(tmp_path_factory):
    """A state with a fleet PKI, operator.alice (active), operator.gone (revoked), and a fleet."""
    s = State(tmp_path_factory.mktemp("dash") / ".warden")
    pki.init_pki(s)
    add_principal(s, "alice", "operator")
    add_principal(s, "gone", "operator")
    revoke_principal(s, "operator.gone", "left")
    fill(s)
    return s


def get(url, headers=None, context=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_snapshot_fleet_and_rollouts(st):
    with Running(st) as srv:
        code, headers, body = get(srv.url + "api/snapshot")
    assert code == 200 and headers["Content-Type"].startswith("application/json")
    snap = json.loads(body)
    rows = {r["thing"]: r for r in snap["fleet"]}
    assert sorted(rows) == ["dev-a", "dev-b", "dev-c"]
    a, b, c = rows["dev-a"], rows["dev-b"], rows["dev-c"]
    assert a["connection"] == "online" and a["tags"] == {"site": "lab"} and a["version"] == "1.0.0"
    assert a["vitals"]["hf"] == 29600 and a["vitals"]["up"] == 140
    assert [x["rule"] for x in a["alerts"]] == ["heap-low"]
    assert b["connection"] == "offline" and b["reason"] == "lwt" and b["alerts"] == []
    assert c["connection"] == "unknown" and c["vitals"] is None
    assert a["rollout"] is None and b["rollout"] == "r1"     # dev-a finished; dev-b is still held
    (r1,) = snap["rollouts"]
    assert r1["name"] == "r1" and r1["state"] == "running"
    assert r1["counts"] == {"succeeded": 1, "waiting": 2}
    assert r1["stages"] == {"canary": {"succeeded": 1}, "main": {"waiting": 2}}


def test_device_and_rollout_pages_follow_the_stores(st):
    with Running(st) as srv:
        code, _, body = get(srv.url + "api/device/dev-a")
        assert code == 200
        d = json.loads(body)
        hf = next(s for s in d["vitals"] if s["key"] == "hf")
        assert [p[1] for p in hf["points"]] == [30000, 29900, 29800, 29700, 29600]
        assert d["alerts"][0]["rule"] == "heap-low" and d["alerts"][0]["state"] == "open"
        assert d["rollouts"] == [{"rollout": "r1", "rollout_state": "running", "stage": "canary",
                                  "state": "succeeded", "reason": None, "version": "1.1.0"}]
        # a member fails with a reason holding markup: it comes back as data, unchanged
        with RolloutStore(st) as ro:
            ro.set_member("r1", "dev-b", "failed", "<b>heap</b> below baseline", finished=True)
        code, _, body = get(srv.url + "api/rollout/r1")
        r = json.loads(body)
        assert r["counts"] == {"succeeded": 1, "failed": 1, "waiting": 1}
        assert r["members"][1]["reason"] == "<b>heap</b> below baseline"
        assert [e["event"] for e in r["events"]][-2:] == ["succeeded", "failed"]
        since = r["events"][-1]["id"]
        assert json.loads(get(srv.url + f"api/rollout/r1?since={since}")[2])["events"] == []
        assert get(srv.url + "api/rollout/r1?since=x")[0] == 400
        assert get(srv.url + "api/device/nobody")[0] == 404
        assert get(srv.url + "api/rollout/nothing")[0] == 404
        # dev-a's last will says offline, with no version: the page keeps the version it last reported
        with MonitorStore(st) as mon:
            mon.add_point("dev-a", "status", time.time(), {"state": "offline", "reason": "lwt"})
        a = json.loads(get(srv.url + "api/device/dev-a")[2])["device"]
        assert (a["connection"], a["reason"], a["version"]) == ("offline", "lwt", "1.0.0")


def test_headers_and_the_loopback_host_check(st):
    with Running(st) as srv:
        for path in ("", "app.js", "style.css", "api/snapshot", "api/device/nobody"):
            code, h, _ = get(srv.url + path)
            assert code in (200, 404)
            assert h["Cache-Control"] == "no-store"
            assert "default-src 'none'" in h["Content-Security-Policy"]
            assert "script-src 'self'" in h["Content-Security-Policy"]
            assert h["X-Content-Type-Options"] == "nosniff"
        code, h, body = get(srv.url)
        assert code == 200 and b'src="/app.js"' in body and b"<script>" not in body
        assert get(srv.url + "api/snapshot", {"Host": f"localhost:{srv.port}"})[0] == 200
        # a name pointed at 127.0.0.1 by someone else's DNS gets nothing
        code, h, body = get(srv.url + "api/snapshot", {"Host": f"evil.example:{srv.port}"})
        assert code == 421 and b"fleet" not in body and h["Cache-Control"] == "no-store"
        assert get(srv.url + "nothing-here")[0] == 404


def test_bind_refusals(pst):
    assert check_bind(pst, "127.0.0.1", None) is False
    assert check_bind(pst, "localhost", "operator.alice") is False
    assert check_bind(pst, "0.0.0.0", "operator.alice") is True
    with pytest.raises(DashboardError, match="not the loopback") as e:
        check_bind(pst, "0.0.0.0", None)
    assert "--principal" in e.value.hint
    with pytest.raises(DashboardError, match="not an operator"):
        check_bind(pst, "192.0.2.1", "technician.default")
    with pytest.raises(DashboardError, match="revoked"):
        check_bind(pst, "0.0.0.0", "operator.gone")
    with pytest.raises(DashboardError, match="no principal"):
        check_bind(pst, "0.0.0.0", "operator.nobody")
    r = CliRunner().invoke(main, ["--state", str(pst.root), "dashboard", "--host", "0.0.0.0"])
    assert r.exit_code == 1 and r.output.startswith("error: will not listen on 0.0.0.0")
    assert "Traceback" not in r.output
    r = CliRunner().invoke(main, ["--state", str(pst.root), "dashboard", "--host", "0.0.0.0",
                                  "--principal", "operator.gone"])
    assert r.exit_code == 1 and "revoked" in r.output


def _client(state, role_stem=None):
    ctx = ssl.create_default_context(cafile=str(state.pki_dir / pki.CA_CERT))
    if role_stem:
        ctx.load_cert_chain(str(state.pki_dir / f"{role_stem}.crt.pem"), str(state.pki_dir / f"{role_stem}.key.pem"))
    return ctx


def test_mutual_tls_off_the_loopback(pst):
    with Running(pst, host="0.0.0.0", principal="operator.alice") as srv:
        assert srv.url.startswith("https://")
        url = f"https://127.0.0.1:{srv.port}/api/snapshot"
        code, h, body = get(url, context=_client(pst, "operator.alice"))
        assert code == 200 and len(json.loads(body)["fleet"]) == 3 and h["Cache-Control"] == "no-store"
        assert get(url, context=_client(pst, "operator"))[0] == 200          # operator.default
        assert get(url, context=_client(pst, "technician"))[0] == 403        # not an operator
        for stem in (None, "operator.gone"):     # no certificate; one in the CRL: no handshake
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                get(url, context=_client(pst, stem))
        with pytest.raises((urllib.error.URLError, ConnectionError)):     # plain HTTP gets no answer
            get(f"http://127.0.0.1:{srv.port}/api/snapshot")
        # an operator revoked while the server runs is refused on the next request
        revoke_principal(pst, "operator.alice", "left")
        assert get(url, context=_client(pst, "operator.alice"))[0] == 403
