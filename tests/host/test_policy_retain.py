"""Retained publishes on AWS IoT: a retained message needs iot:RetainPublish as well as iot:Publish.

Devices publish retained messages (their `online` status and their retained last will on
dt/<app>/<thing>/status); mosquitto lets any allowed publish carry the retain flag. So the AWS
rendering grants iot:RetainPublish wherever it grants iot:Publish, and the proof compares the
retained publish as an action of its own (warden.policy.proof: mosquitto write; AWS iot:Publish and
iot:RetainPublish).
"""
import json
import os
import subprocess
import sys

import pytest

from warden.fleet import pki
from warden.policy import aws
from warden.policy import proof as policyproof
from warden.policy.acleval import MosquittoAcl
from warden.policy.model import default_policy
from warden.policy.mosquitto import render_mosquitto_acl
from warden.state import State

APP = "warden"
REGION, ACCOUNT = "eu-west-1", "210987654321"
OPERATOR, TECHNICIAN = "operator.default", "technician.default"
MAX_POLICY_CHARS = 2048   # AWS IoT CreatePolicy: at most 2048 characters, whitespace not counted


@pytest.fixture(scope="module")
def policy():
    return default_policy()


@pytest.fixture(scope="module")
def acl_text(policy):
    return render_mosquitto_acl(APP, policy)


@pytest.fixture(scope="module")
def docs(policy):
    return aws.render_aws(policy, APP, REGION, ACCOUNT)


def topic_arn(topic):
    return aws.arn(REGION, ACCOUNT, "topic", topic)


def device_ctx(thing):
    return aws.Context(client_id=thing, cn=thing, ou="device", thing=thing)


def test_device_may_retain_its_status_and_nothing_of_another_device(docs):
    doc = docs["device"]
    status = f"dt/{APP}/dev-1/status"
    for action in (aws.PUBLISH, aws.RETAIN_PUBLISH):
        assert aws.evaluate(doc, device_ctx("dev-1"), action, topic_arn(status)), action
        assert not aws.evaluate(doc, device_ctx("dev-2"), action, topic_arn(status)), action
        assert not aws.evaluate(doc, device_ctx("dev-1"), action, topic_arn(f"cmd/{APP}/dev-1/ota")), action
    # not a second grant of its own: the Publish statement carries both actions, same resources
    publish = [st for st in doc["Statement"] if st.get("Sid") == "Publish"]
    assert len(publish) == 1 and publish[0]["Action"] == [aws.PUBLISH, aws.RETAIN_PUBLISH]


def test_retain_publish_goes_with_every_publish_and_only_there(policy, docs):
    """On the matrix of topics, AWS's retained publish answers as mosquitto's write does, and a
    role gets iot:RetainPublish only with a publish grant (the operator's: the monitor's alerts)."""
    acl = MosquittoAcl(render_mosquitto_acl(APP, policy))
    ev = aws.AwsEvaluator(docs, REGION, ACCOUNT)
    topics = [f"{k}/{APP}/{t}/{leaf}" for k in ("dt", "cmd") for t in ("dev-1", "dev-2", OPERATOR, TECHNICIAN)
              for leaf in ("status", "telemetry", "ota", "a/b")]
    allowed = 0
    for who in ("dev-1", OPERATOR, TECHNICIAN):
        for topic in topics:
            want = acl.allowed(who, "write", topic)
            assert ev.allowed(policy, who, "retain_publish", topic) == want, (who, topic)
            assert ev.allowed(policy, who, "publish", topic) == want, (who, topic)
            allowed += want
    assert allowed == 7     # dev-1: its own four; technician: cmd/../{dev-1,dev-2,operator.default}/ota
    granted = {role for role, doc in docs.items() for st in doc["Statement"]
               if st["Effect"] == "Allow" and aws.RETAIN_PUBLISH in aws._as_list(st["Action"])}
    assert granted == {"device", "technician", "operator"}
    assert ev.allowed(policy, OPERATOR, "retain_publish", f"alerts/{APP}/dev-1/heap-low")


def without_retain(docs, roles=None):
    """A copy of `docs` with iot:RetainPublish taken out of every statement (of `roles`)."""
    out = json.loads(json.dumps(docs))
    for role, doc in out.items():
        if roles is not None and role not in roles:
            continue
        for st in doc["Statement"]:
            actions = aws._as_list(st["Action"])
            if aws.RETAIN_PUBLISH in actions:
                actions.remove(aws.RETAIN_PUBLISH)
                st["Action"] = actions[0] if len(actions) == 1 else actions
    return out


def test_the_rendering_is_proved_equal_with_retain(policy, acl_text, docs):
    assert policyproof.ACTIONS == ("publish", "retain_publish", "subscribe")
    assert policyproof.prove(policy, APP, acl_text, docs, REGION, ACCOUNT) == []


def test_the_proof_finds_a_rendering_without_retain_publish(policy, acl_text, docs):
    broken = without_retain(docs)
    assert aws.RETAIN_PUBLISH not in json.dumps(broken)
    bad = policyproof.prove(policy, APP, acl_text, broken, REGION, ACCOUNT)
    assert bad and {m.action for m in bad} == {"retain_publish"}     # publish and subscribe still agree
    assert {m.principal for m in bad} >= {"thing-1", TECHNICIAN, OPERATOR}   # the operator: its alerts
    acl = MosquittoAcl(acl_text)
    ev = aws.AwsEvaluator(broken, REGION, ACCOUNT)
    for m in bad:
        assert m.mosquitto and not m.aws, str(m)
        # the witness is real: the evaluators disagree on it, and a plain publish still agrees
        assert acl.allowed(m.principal, "write", m.topic)
        assert not ev.allowed(policy, m.principal, "retain_publish", m.topic)
        assert ev.allowed(policy, m.principal, "publish", m.topic)
    dev = next(m for m in bad if m.principal == "thing-1")
    assert dev.topic == f"dt/{APP}/thing-1"                              # the shortest witness


def test_the_proof_finds_retain_publish_missing_from_one_role(policy, acl_text, docs):
    bad = policyproof.prove(policy, APP, acl_text, without_retain(docs, {"technician"}), REGION, ACCOUNT)
    assert [(m.principal, m.action) for m in bad] == [(TECHNICIAN, "retain_publish")]


def test_the_proof_finds_retain_publish_narrower_than_publish(policy, acl_text, docs):
    """RetainPublish on the status topic only: a device could not retain anything else it may
    publish (mosquitto lets it), and the proof names such a topic."""
    broken = without_retain(docs, {"device"})
    stmts = broken["device"]["Statement"]
    stmts.append({"Sid": "RetainStatusOnly", "Effect": "Allow", "Action": aws.RETAIN_PUBLISH,
                  "Resource": topic_arn(f"dt/{APP}/{aws.THING_VAR}/status")})
    bad = policyproof.prove(policy, APP, acl_text, broken, REGION, ACCOUNT)
    hits = [m for m in bad if m.principal == "thing-1"]
    assert hits and hits[0].action == "retain_publish" and hits[0].mosquitto and not hits[0].aws
    assert hits[0].topic != f"dt/{APP}/thing-1/status"
    ev = aws.AwsEvaluator(broken, REGION, ACCOUNT)
    assert ev.allowed(policy, "dev-9", "retain_publish", f"dt/{APP}/dev-9/status")
    assert not ev.allowed(policy, "dev-9", "retain_publish", f"dt/{APP}/dev-9/telemetry")


def test_retain_publish_beyond_publish_changes_nothing(policy, acl_text, docs):
    """AWS needs both actions for a retained message: an iot:RetainPublish wider than iot:Publish
    grants no more, and the proof agrees."""
    wide = json.loads(json.dumps(docs))
    wide["device"]["Statement"].append({"Sid": "RetainAnything", "Effect": "Allow", "Action": aws.RETAIN_PUBLISH,
                                        "Resource": topic_arn("*")})
    assert policyproof.prove(policy, APP, acl_text, wide, REGION, ACCOUNT) == []


def test_device_document_fits_the_aws_size_limit(docs):
    """The device's document with iot:RetainPublish stays under AWS's 2048 characters."""
    size = len("".join(json.dumps(docs["device"], separators=(",", ":")).split()))
    assert size <= MAX_POLICY_CHARS - 512, size


# -- the CLI ------------------------------------------------------------------------------------
def warden(state, *args):
    env = dict(os.environ, WARDEN_STATE=str(state.root))
    exe = os.path.join(os.path.dirname(sys.executable), "warden")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_check_passes_and_render_grants_retain_publish(tmp_path):
    state = State(tmp_path / ".warden")
    pki.init_pki(state)
    r = warden(state, "policy", "check")
    assert r.returncode == 0 and "proved" in r.stdout, r.stdout + r.stderr
    r = warden(state, "policy", "render", "--format", "aws", "--region", REGION, "--account", ACCOUNT)
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    assert aws.evaluate(docs["device"], device_ctx("dev-1"), aws.RETAIN_PUBLISH,
                        topic_arn(f"dt/{APP}/dev-1/status"))
