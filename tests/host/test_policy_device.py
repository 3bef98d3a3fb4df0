"""The device side of least privilege, under the real micropython: the topic builder refuses
wildcards, other things' names and AWS-invalid topics before anything is sent, and says so in the
device log; the status message carries the certificate-expiry warning."""
import json
import re

from support.devrun import MP, run_mp

def test_topic_refusals_are_raised_and_logged():
    r = run_mp(script=MP / "topic_refusals.py")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "ALLOWED" not in out, out
    log = [ln for ln in out.splitlines() if re.match(r"\d+ ERROR topics: refused ", ln)]
    raised = [ln for ln in out.splitlines() if ln.startswith("RAISED refused ")]
    assert len(log) == len(raised) == 10, out
    for reason in ("dt/warden/t-2/telemetry is outside this device's topics",
                   "wildcards are not allowed in a publish topic: dt/warden/t-1/#",
                   "cmd/warden/t-1/x is outside",
                   "too long for AWS IoT",                     # 8 slashes
                   "thing name 'a/b': contains '/'", "thing name '$sys': must not start with $",
                   "thing name '': must be 1..64"):
        assert any(reason in ln for ln in log), (reason, out)
    # 130 two-byte characters: 143 characters but 273 bytes, over AWS's 256-byte limit
    assert sum("too long for AWS IoT" in ln for ln in log) == 2
    assert "OK dt/warden/t-1/telemetry dt/warden/t-1/ota" in out


def test_status_message_carries_the_expiry_warning():
    r = run_mp(script=MP / "status_warning.py", heap="256k")
    assert r.returncode == 0, r.stdout + r.stderr
    warned, plain = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert warned["state"] == "online" and warned["warning"] == "certificate expires in 12 days"
    assert "warning" not in plain
