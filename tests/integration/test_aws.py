"""`warden aws setup|sync|audit` against moto in server mode: a real HTTP server on loopback that
boto3 talks to as it talks to AWS (tests/support/motoserver.py). Each test gets a fresh account
(moto reset) and a fresh copy of one fleet PKI; what AWS holds is checked with a boto3 client of
the test's own, not with warden's reading code.

moto does not check a CA's verification certificate, has no ListCACertificates, and does not
refuse a CreateThing over an existing name: those parts of AWS's behaviour are not shown here
(docs/aws.md, 'What the tests show').
"""
import json
import shutil
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from click.testing import CliRunner
from cryptography import x509

from support.motoserver import MotoServer
from warden.aws import project, setup as awssetup, sync as awssync
from warden.aws.client import Aws, AwsError
from warden.cli import main
from warden.fleet import devices, groups, pki, principals
from warden.fleet.registry import Registry
from warden.policy import aws as awspolicy
from warden.policy.model import load_policy
from warden.state import State, write_file, write_private

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def moto():
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    state = State(tmp_path_factory.mktemp("aws-template") / ".warden")
    pki.init_pki(state)
    principals.ensure_default_principals(state)
    return state


@pytest.fixture
def env(monkeypatch):
    for k, v in MotoServer.env().items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_IOT"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def fleet(moto, template, tmp_path, env):
    """A fresh account and a copy of the fleet PKI, set up for AWS with three devices."""
    moto.reset()
    state = State(tmp_path / ".warden")
    shutil.copytree(template.root, state.root)
    for i in range(3):
        register(state, f"aws-{i}")
    awssetup.setup(state, REGION, endpoint_url=moto.url)
    return state


def register(state, thing):
    """A device as a board gets it (no twin): certificate, key, registry row."""
    cert_der, key_der = pki.issue_device_cert(state, thing)
    cert = x509.load_der_x509_certificate(cert_der)
    with Registry(state.registry_path) as reg:
        reg.add(thing, pki.fingerprint(cert_der), cert.serial_number, not_after=cert.not_valid_after_utc)
    write_file(state.device_dir(thing) / "cert.der", cert_der)
    write_private(state.device_dir(thing) / "key.der", key_der)
    return pki.fingerprint(cert_der)


def boto(moto):
    return boto3.client("iot", region_name=REGION, endpoint_url=moto.url)


def cli(state, *args):
    return CliRunner().invoke(main, ["--state", str(state.root), "aws", *args])


def sync(state, **kw):
    proj = project.load(state)
    client = proj.client()
    plan = awssync.plan(state, proj, client, **kw)
    awssync.apply(plan, client)
    return plan, client


def status(iot, cert_id):
    return iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"]


def things(iot):
    return {t["thingName"] for t in iot.list_things()["things"]}


# -- setup -------------------------------------------------------------------------------------------
def test_setup_records_the_ats_endpoint_and_registers_the_fleet_ca_once(fleet, moto):
    proj = project.load(fleet)
    assert proj.endpoint.endswith(f"-ats.iot.{REGION}.amazonaws.com")
    assert (proj.region, proj.account, proj.mode) == (REGION, "123456789012", "ca")
    ca = pki.load_ca(fleet)[0]
    desc = boto(moto).describe_ca_certificate(certificateId=proj.ca_certificate_id)["certificateDescription"]
    assert desc["status"] == "ACTIVE"
    assert pki.fingerprint(pki.load_cert(desc["certificatePem"].encode())) == pki.fingerprint(ca)
    r = cli(fleet, "setup", "--region", REGION, "--endpoint-url", moto.url)
    assert r.exit_code == 0, r.output
    assert "already registered and ACTIVE" in r.output
    assert project.load(fleet).ca_certificate_id == proj.ca_certificate_id
    # the verification certificate is in the CA's log, and not an audit finding
    assert any(e["kind"] == "verification" for e in pki.issued_log(fleet))


def test_setup_without_ca_registers_certificates_on_their_own(fleet, moto):
    r = cli(fleet, "setup", "--region", REGION, "--endpoint-url", moto.url, "--without-ca")
    assert r.exit_code == 0, r.output
    assert project.load(fleet).mode == "without-ca"
    plan, client = sync(fleet)
    assert client.calls["RegisterCertificateWithoutCA"] == 5 and not client.calls["RegisterCertificate"]
    iot = boto(moto)
    with Registry(fleet.registry_path) as reg:
        d = reg.get("aws-0")
    assert status(iot, d.fingerprint) == "ACTIVE"


# -- sync ----------------------------------------------------------------------------------------------
def test_sync_from_an_empty_account_then_again_reads_only(fleet, moto):
    iot = boto(moto)
    r = cli(fleet, "sync")
    assert r.exit_code == 0, r.output
    assert "synced" in r.output
    assert things(iot) == {"aws-0", "aws-1", "aws-2"}
    docs = awspolicy.render_aws(load_policy(fleet), fleet.app, REGION, "123456789012")
    for role, doc in docs.items():
        got = iot.get_policy(policyName=f"warden-{fleet.app}-{role}")
        assert json.loads(got["policyDocument"]) == doc
    with Registry(fleet.registry_path) as reg:
        for d in reg.list():
            assert status(iot, d.fingerprint) == "ACTIVE"
            arn = f"arn:aws:iot:{REGION}:123456789012:cert/{d.fingerprint}"
            assert iot.list_thing_principals(thingName=d.thing)["principals"] == [arn]
            assert arn in iot.list_targets_for_policy(policyName=f"warden-{fleet.app}-device")["targets"]
        op = reg.principal("operator.default")
        op_cert = reg.certificates(op.cn)[0]
    op_arn = f"arn:aws:iot:{REGION}:123456789012:cert/{op_cert.fingerprint}"
    assert iot.list_targets_for_policy(policyName=f"warden-{fleet.app}-operator")["targets"] == [op_arn]
    assert iot.list_principal_things(principal=op_arn)["things"] == []       # a principal has no thing
    # nothing to change: the second sync only reads, a constant number of calls per device
    plan, client = sync(fleet)
    assert plan.empty and client.writes == 0
    assert client.calls["ListThingPrincipals"] == 3 and sum(client.calls.values()) <= 3 + 10
    r = cli(fleet, "sync")
    assert r.exit_code == 0 and "in sync" in r.output, r.output
    # what AWS holds is the rendering `policy check` proves equal to the mosquitto ACL, retain included
    r = CliRunner().invoke(main, ["--state", str(fleet.root), "policy", "check", "--region", REGION,
                                  "--account", "123456789012"])
    assert r.exit_code == 0 and "proved" in r.output and "retained publish" in r.output, r.output


def test_dry_run_prints_the_plan_and_changes_nothing(fleet, moto):
    iot = boto(moto)
    r = cli(fleet, "sync", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "would create thing aws-1" in r.output and "would create policy" in r.output
    assert things(iot) == set() and iot.list_certificates()["certificates"] == []
    assert iot.list_policies()["policies"] == []


def test_revoke_and_rotate_then_sync(fleet, moto):
    iot = boto(moto)
    sync(fleet)
    with Registry(fleet.registry_path) as reg:
        old1 = reg.get("aws-1").fingerprint
        gone = reg.get("aws-2").fingerprint
    devices.rotate_device(fleet, "aws-1")          # no twin: the new identity waits as pending
    devices.finish_rotation(fleet, "aws-1")        # the board has it: active, the old one revoked
    devices.revoke_device(fleet, "aws-2", "stolen")
    with Registry(fleet.registry_path) as reg:
        new1 = reg.get("aws-1").fingerprint
    plan, _ = sync(fleet)
    assert status(iot, old1) == "REVOKED" and status(iot, gone) == "REVOKED"
    assert status(iot, new1) == "ACTIVE"
    arn = lambda cid: f"arn:aws:iot:{REGION}:123456789012:cert/{cid}"
    assert iot.list_thing_principals(thingName="aws-1")["principals"] == [arn(new1)]
    assert iot.list_thing_principals(thingName="aws-2")["principals"] == []
    targets = iot.list_targets_for_policy(policyName=f"warden-{fleet.app}-device")["targets"]
    assert arn(old1) not in targets and arn(gone) not in targets and arn(new1) in targets
    # the revoked device's thing goes only with --delete
    assert [str(s) for s in plan.held] == ["delete thing aws-2: its device is revoked"]
    assert "aws-2" in things(iot)
    r = cli(fleet, "sync", "--delete")
    assert r.exit_code == 0, r.output
    assert things(iot) == {"aws-0", "aws-1"}
    plan, client = sync(fleet)
    assert plan.empty and client.writes == 0


def test_device_tags_become_thing_groups_with_their_members(fleet, moto):
    iot = boto(moto)
    groups.set_tags(fleet, "aws-0", ["site=lab", "ring=canary", "hw.rev=3"])
    groups.set_tags(fleet, "aws-1", ["site=lab"])
    plan, _ = sync(fleet)
    lab, canary = f"warden-{fleet.app}-site:lab", f"warden-{fleet.app}-ring:canary"
    made = {g["groupName"] for g in iot.list_thing_groups()["thingGroups"]}
    assert made == {lab, canary}
    members = lambda g: set(iot.list_things_in_thing_group(thingGroupName=g)["things"])
    assert members(lab) == {"aws-0", "aws-1"} and members(canary) == {"aws-0"}
    # a key AWS cannot put in a group name is said, not silently dropped
    assert any("'hw.rev=3' of aws-0 cannot name an AWS thing group" in n for n in plan.notes)
    # a removed tag: leaving the group is a deletion, held back until --delete
    groups.set_tags(fleet, "aws-1", remove=["site"])
    plan, _ = sync(fleet)
    assert [str(s) for s in plan.held] == [f"delete attachment {lab} <- aws-1: the device no longer has the tag"]
    assert members(lab) == {"aws-0", "aws-1"}
    plan, _ = sync(fleet, delete=True)
    assert members(lab) == {"aws-0"}
    plan, client = sync(fleet)
    assert plan.empty and client.writes == 0


def test_a_principal_gets_its_roles_policy(fleet, moto):
    sync(fleet)
    principals.add_principal(fleet, "alice", "operator")
    plan, _ = sync(fleet)
    kinds = sorted((s.verb, s.kind) for s in plan.steps)
    # its certificate, its attachment, and the operator policy's new version (alice is in its CN list)
    assert kinds == [("create", "attachment"), ("create", "certificate"), ("update", "policy")]
    iot = boto(moto)
    with Registry(fleet.registry_path) as reg:
        cid = reg.certificates("operator.alice")[0].fingerprint
    arn = f"arn:aws:iot:{REGION}:123456789012:cert/{cid}"
    assert arn in iot.list_targets_for_policy(policyName=f"warden-{fleet.app}-operator")["targets"]
    doc = json.loads(iot.get_policy(policyName=f"warden-{fleet.app}-operator")["policyDocument"])
    assert "operator.alice" in doc["Statement"][0]["Condition"]["StringEquals"][awspolicy.CN_KEY]


def test_a_sync_stopped_half_way_is_completed_by_the_next(fleet, moto):
    proj = project.load(fleet)
    client = proj.client()
    plan = awssync.plan(fleet, proj, client)
    steps = []

    def crash(step):
        steps.append(step)
        if len(steps) == 7:          # policies and some certificates done, no thing yet
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        awssync.apply(plan, client, progress=crash)
    plan2, _ = sync(fleet)
    assert len(plan2.steps) == len(plan.steps) - 7
    plan3, client3 = sync(fleet)
    assert plan3.empty and client3.writes == 0
    assert things(boto(moto)) == {"aws-0", "aws-1", "aws-2"}


# -- audit ---------------------------------------------------------------------------------------------
def test_audit_finds_hand_made_drift_and_sync_repairs_what_is_its_own(fleet, moto):
    sync(fleet)
    iot = boto(moto)
    r = cli(fleet, "audit")
    assert r.exit_code == 0 and "no findings" in r.output, r.output
    devices.revoke_device(fleet, "aws-2")
    with Registry(fleet.registry_path) as reg:
        c0, c2 = reg.get("aws-0").fingerprint, reg.get("aws-2").fingerprint
    arn0 = f"arn:aws:iot:{REGION}:123456789012:cert/{c0}"
    iot.detach_thing_principal(thingName="aws-0", principal=arn0)            # a thing without its cert
    iot.create_policy(policyName="debug-all", policyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}))
    iot.attach_policy(policyName="debug-all", target=arn0)                    # over-broad, by hand
    iot.create_policy_version(policyName=f"warden-{fleet.app}-device", setAsDefault=True, policyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": "*"}]}))
    r = cli(fleet, "audit", "--json")
    assert r.exit_code == 1
    found = {(f["check"], f["subject"].split(" (")[0]) for f in json.loads(r.output)["findings"]}
    assert ("aws-revoked-active", f"certificate {c2[:12]}...") in found    # revoked here, ACTIVE there
    assert ("aws-thing-without-cert", "thing aws-0") in found
    assert ("aws-policy-by-hand", "AWS policy debug-all") in found
    assert ("aws-action-star", "AWS policy debug-all") in found
    assert ("aws-resource-star", "AWS policy debug-all") in found
    assert ("aws-connect-unpinned", "AWS policy debug-all") in found
    assert ("aws-policy-drift", f"policy warden-{fleet.app}-device") in found
    r = cli(fleet, "sync")
    assert r.exit_code == 0, r.output
    r = cli(fleet, "audit", "--json")
    left = {f["check"] for f in json.loads(r.output)["findings"]}
    # the hand-made policy is for a person to remove; the revoked device's thing for --delete
    assert left == {"aws-policy-by-hand", "aws-action-star", "aws-resource-star", "aws-connect-unpinned",
                    "aws-thing-without-cert"}
    assert status(iot, c2) == "REVOKED"


# -- errors --------------------------------------------------------------------------------------------
def test_no_credentials_is_one_clear_line(fleet, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    for args in (["sync"], ["audit"], ["setup", "--region", REGION]):
        r = cli(fleet, *args)
        assert r.exit_code == 1, r.output
        assert r.output.startswith("error: no AWS credentials found\n"), r.output
        assert "aws configure" in r.output and "Traceback" not in r.output


def test_sync_before_setup_says_to_run_setup(template, tmp_path, env):
    state = State(tmp_path / ".warden")
    shutil.copytree(template.root, state.root)
    r = cli(state, "sync")
    assert r.exit_code == 1
    assert "error: the project is not set up for AWS IoT" in r.output and "warden aws setup" in r.output


class _Throttler:
    """A loopback HTTP server in front of moto that answers the first `n` requests as AWS does when
    it throttles (429, x-amzn-ErrorType: ThrottlingException), and forwards the rest."""

    def __init__(self, target, n):
        self.target, self.left, self.seen = target, n, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.seen += 1
                if outer.left > 0:
                    outer.left -= 1
                    data = b'{"message":"Rate exceeded"}'
                    self.send_response(429)
                    self.send_header("x-amzn-ErrorType", "ThrottlingException")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                req = urllib.request.Request(outer.target + self.path, data=body or None, method=self.command,
                                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                try:
                    resp = urllib.request.urlopen(req, timeout=10)
                    code, headers, data = resp.status, resp.headers, resp.read()
                except urllib.error.HTTPError as e:
                    code, headers, data = e.code, e.headers, e.read()
                self.send_response(code)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_throttling_is_retried_with_backoff_and_then_a_clear_error(fleet, moto):
    proxy = _Throttler(moto.url, 3)
    try:
        delays = []
        client = Aws(REGION, endpoint_url=proxy.url, sleep=delays.append)
        proj = project.load(fleet)
        plan = awssync.plan(fleet, proj, client)
        awssync.apply(plan, client)
        assert client.retries == 3 and len(delays) == 3
        assert all(0 <= d <= 0.2 * 2 ** i for i, d in enumerate(delays))   # full jitter under a doubling cap
        assert things(boto(moto)) == {"aws-0", "aws-1", "aws-2"}
        proxy.left = 100
        client = Aws(REGION, endpoint_url=proxy.url, attempts=4, sleep=lambda s: None)
        with pytest.raises(AwsError) as e:
            awssync.plan(fleet, proj, client)
        assert "kept throttling iot:ListPolicies after 4 tries" in str(e.value)
        assert "warden aws sync" in e.value.hint
    finally:
        proxy.close()


# -- devices provisioned for AWS -------------------------------------------------------------------------
def test_device_add_and_deploy_with_broker_aws(fleet, tmp_path):
    from warden.aws.device import trust_store
    from warden.board import deploy, flashimage, twin

    endpoint = project.load(fleet).endpoint
    r = CliRunner().invoke(main, ["--state", str(fleet.root), "device", "add", "aws-twin", "--broker", "aws"])
    assert r.exit_code == 0, r.output
    ff = flashimage.FlashFile(twin.flash_path(fleet, "aws-twin"))
    cfg = json.loads(ff.read("/config.json"))
    assert cfg["broker"] == {"host": endpoint, "port": 8883} and cfg["thing"] == "aws-twin"
    assert ff.read("/identity/ca.der") == trust_store()
    devices.rotate_device(fleet, "aws-twin")            # a new identity; the trust store stays Amazon's
    ff = flashimage.FlashFile(twin.flash_path(fleet, "aws-twin"))
    assert ff.read("/identity/ca.der") == trust_store()
    assert ff.read("/identity/cert.der") == (fleet.device_dir("aws-twin") / "cert.der").read_bytes()
    image = tmp_path / "vfs.img"
    r = CliRunner().invoke(main, ["--state", str(fleet.root), "deploy", "aws-0", "--broker", "aws",
                                  "--image-only", str(image), "--wifi-ssid", "lab"],
                           env={"WARDEN_WIFI_PASSWORD": "x"})
    assert r.exit_code == 0, r.output
    files = deploy.files_in_image(image.read_bytes())
    assert files["/identity/ca.der"] == trust_store()
    assert json.loads(files["/config.json"])["broker"] == {"host": endpoint, "port": 8883}
    assert files["/identity/cert.der"] == (fleet.device_dir("aws-0") / "cert.der").read_bytes()


def test_broker_aws_before_setup_issues_nothing(template, tmp_path, env):
    state = State(tmp_path / ".warden")
    shutil.copytree(template.root, state.root)
    r = CliRunner().invoke(main, ["--state", str(state.root), "device", "add", "early", "--broker", "aws"])
    assert r.exit_code == 1 and "not set up for AWS IoT" in r.output, r.output
    with Registry(state.registry_path) as reg:
        assert reg.get("early") is None


def test_credentials_aws_does_not_know_are_named(template, tmp_path, monkeypatch):
    """moto checking credentials after its first five requests (setup's): a key it does not know is
    said to be that. (Its IAM permission checks cannot show a refused IoT action: moto rejects the
    signature of every authenticated IoT GET; the translation of AccessDenied is in
    tests/host/test_aws_client.py.)"""
    import os

    for k, v in MotoServer.env().items():
        monkeypatch.setenv(k, v)
    server = MotoServer(env=MotoServer.env(os.environ) | {"INITIAL_NO_AUTH_ACTION_COUNT": "5"}).start()
    try:
        state = State(tmp_path / ".warden")
        shutil.copytree(template.root, state.root)
        register(state, "ro-1")
        r = cli(state, "setup", "--region", REGION, "--endpoint-url", server.url)
        assert r.exit_code == 0, r.output
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        for args in (["sync"], ["audit"]):
            r = cli(state, *args)
            assert r.exit_code == 1
            assert r.output.startswith("error: AWS does not accept these credentials (InvalidClientTokenId)\n"), \
                r.output
    finally:
        server.stop()
