"""The policy on the real broker: 5 devices, an operator and a technician, every cross-device
publish and subscription refused, every allowed path working, proven by a privileged observer.

Every client publishes every topic of the matrix (QoS 1, each PUBACKed) and every client is
subscribed to `#` (mosquitto grants any subscription and filters delivery). The observer (test-only
role: reads dt/# and cmd/#) sees every message the broker accepted, so it proves the publish
rules; each client's own deliveries prove the read rules. Sentinels sent after everything was
PUBACKed arrive after everything else (mosquitto routes a PUBLISH before it acknowledges it, and
keeps each subscriber's queue in order), so when a client has its sentinel it has all it will get.

The same cases are put to the two evaluators (the ACL file the broker loaded, and the AWS
documents rendered from the same policy): broker, mosquitto evaluator, AWS evaluator and the
issue's words must give the same answer for each (principal, action, topic).
"""
import re

import pytest

from warden.policy import aws
from warden.policy.acleval import MosquittoAcl
from warden.policy.model import load_policy

APP = "warden"
THINGS = [f"mx-{i}" for i in range(1, 6)]
OPERATOR, TECHNICIAN, OBSERVER = "operator.default", "technician.default", "observer.default"
END = b"END"


def matrix_topics():
    out = []
    for t in THINGS + [OPERATOR, TECHNICIAN, "a/b"]:
        for kind in ("dt", "cmd"):
            for leaf in ("telemetry", "status", "ota", "logs", "reboot", "x/y"):
                out.append(f"{kind}/{APP}/{t}/{leaf}")
        out.append(f"dt/other-app/{t}/telemetry")
    return out + [f"dt/{APP}/mx-1", f"cmd/{APP}/mx-1", "dt", "cmd"]


def may_publish(who, topic):
    """Issue 5 in words (and the test-only observer), independent of both renderings."""
    lv = topic.split("/")
    if who in THINGS:
        return topic == f"dt/{APP}/{who}" or topic.startswith(f"dt/{APP}/{who}/")
    if who == TECHNICIAN:
        return len(lv) == 4 and lv[:2] == ["cmd", APP] and lv[3] in ("ota", "config", "logs") and lv[2] != TECHNICIAN
    if who == OBSERVER:
        return lv[0] == "cmd"
    return False     # the operator sends nothing


def may_read(who, topic):
    lv = topic.split("/")
    if who in THINGS:
        return topic == f"cmd/{APP}/{who}" or topic.startswith(f"cmd/{APP}/{who}/")
    if who == OPERATOR:
        return len(lv) == 4 and lv[:2] == ["dt", APP] and lv[3] in ("telemetry", "status") and lv[2] != OPERATOR
    if who == TECHNICIAN:
        return len(lv) == 4 and lv[:2] == ["dt", APP] and lv[3] in ("ota", "config", "logs") and lv[2] != TECHNICIAN
    if who == OBSERVER:
        return lv[0] in ("dt", "cmd")
    raise AssertionError(who)


@pytest.fixture(scope="module")
def clients(request, broker, pki_state, tmp_path_factory):
    """One connected paho client per principal, each subscribed to '#'."""
    from support.fixtures_broker import Probe, client_files, write_identity
    from warden.fleet import pki

    probes = {}
    ca_pem = (pki_state.pki_dir / pki.CA_CERT).read_bytes()
    folder = tmp_path_factory.mktemp("matrix-ids")
    try:
        for who in THINGS + [OPERATOR, TECHNICIAN, OBSERVER]:
            if who in THINGS:
                ident = write_identity(folder / who, who, *pki.issue_device_cert(pki_state, who), ca_pem)
                ca, cert, key, cid = ident.ca_pem, ident.cert_pem, ident.key_pem, who
            else:
                ca, cert, key = client_files(pki_state, who.split(".")[0])
                cid = ""
            p = Probe(broker.host, broker.port, ca=ca, cert=cert, key=key, client_id=cid, timeout=10)
            p.connect()
            probes[who] = p
        for p in probes.values():
            p.subscribe("#")   # granted to everyone; delivery is what counts
        yield probes
    finally:
        for p in probes.values():
            p.close()


@pytest.fixture(scope="module")
def exchange(clients):
    """Everyone publishes the whole matrix; returns {receiver: set of (topic, payload)}."""
    topics = matrix_topics()
    for who, p in clients.items():
        for topic in topics:
            p.publish(topic, f"{who}|{topic}".encode(), qos=1)
    # sentinels: each goes to the clients allowed to read it, after everything above
    obs, dev1 = clients[OBSERVER], clients["mx-1"]
    for t in THINGS:
        obs.publish(f"cmd/{APP}/{t}/end", END)
    dev1.publish(f"dt/{APP}/mx-1/status", END)
    dev1.publish(f"dt/{APP}/mx-1/ota", END)
    sentinel = {t: f"cmd/{APP}/{t}/end" for t in THINGS}
    sentinel.update({OPERATOR: f"dt/{APP}/mx-1/status", TECHNICIAN: f"dt/{APP}/mx-1/ota",
                     OBSERVER: f"dt/{APP}/mx-1/ota"})
    got = {}
    for who, p in clients.items():
        while True:
            m = p.expect(sentinel[who])
            if m.payload == END:
                break
        received = [(m.topic, m.payload) for m in p.history if m.payload != END]
        assert len(received) == len(set(received)), f"{who} got duplicates"
        got[who] = set(received)
    return topics, got


def accepted(clients, topics):
    return {(t, f"{who}|{t}".encode()) for who in clients for t in topics if may_publish(who, t)}


def test_the_broker_accepts_exactly_the_allowed_publishes(clients, exchange):
    """The privileged observer sees every accepted message: exactly the allowed ones."""
    topics, got = exchange
    want = accepted(clients, topics)
    assert got[OBSERVER] == want
    senders = {p.decode().split("|")[0] for _t, p in got[OBSERVER]}
    assert senders == set(THINGS) | {TECHNICIAN, OBSERVER}       # every device reached its own topics
    # no device published to another device's topics, nor any command
    for topic, payload in got[OBSERVER]:
        sender = payload.decode().split("|")[0]
        if sender in THINGS:
            assert topic.split("/")[2] == sender and topic.startswith("dt/"), (sender, topic)


def test_each_client_receives_exactly_what_it_may_read(clients, exchange):
    topics, got = exchange
    published = accepted(clients, topics)
    for who in THINGS + [OPERATOR, TECHNICIAN]:
        want = {(t, p) for t, p in published if may_read(who, t)}
        assert got[who] == want, (who, sorted(got[who] ^ want)[:5])
        assert want, who    # every role has a working path
    # cross-device: a device hears only its own commands, whoever sent them
    for t in THINGS:
        assert {topic.split("/")[2] for topic, _ in got[t]} == {t}
    # the allowed paths, spelled out
    assert (f"dt/{APP}/mx-3/telemetry", b"mx-3|dt/warden/mx-3/telemetry") in got[OPERATOR]
    assert (f"dt/{APP}/mx-3/status", b"mx-3|dt/warden/mx-3/status") in got[OPERATOR]
    assert (f"cmd/{APP}/mx-4/ota", f"{TECHNICIAN}|cmd/warden/mx-4/ota".encode()) in got["mx-4"]
    assert (f"dt/{APP}/mx-5/ota", b"mx-5|dt/warden/mx-5/ota") in got[TECHNICIAN]


def test_broker_and_both_renderings_agree_case_by_case(broker, pki_state, exchange):
    """Every (principal, action, topic) case of the matrix: the ACL file the broker runs, the AWS
    documents of the same policy and the issue's words give one answer."""
    policy = load_policy(pki_state)
    acl = MosquittoAcl(broker.acl_path.read_text())
    docs = aws.render_aws(policy, pki_state.app)
    ev = aws.AwsEvaluator(docs)
    topics, _got = exchange
    n = 0
    for who in THINGS + [OPERATOR, TECHNICIAN, OBSERVER]:
        for topic in topics:
            pub, read = may_publish(who, topic), may_read(who, topic)
            assert acl.allowed(who, "write", topic) == pub == ev.allowed(policy, who, "publish", topic), (who, topic)
            assert acl.allowed(who, "read", topic) == read == ev.allowed(policy, who, "subscribe", topic), (who, topic)
            n += 2
    assert n == 8 * len(topics) * 2
    assert re.search(r"^pattern write dt/warden/%u/#$", broker.acl_path.read_text(), re.M)
