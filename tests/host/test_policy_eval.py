"""The two renderings of the policy, evaluated: a mosquitto 2.0 ACL evaluator, an AWS IoT policy
evaluator, the matrix of (principal, action, topic) cases on which they must agree, and the proof
that they agree on every topic (warden.policy.proof)."""
import itertools
import json
import random

import paho.mqtt.client as paho
import pytest

from warden.policy import aws
from warden.policy import proof as policyproof
from warden.policy.acleval import AclSyntaxError, MosquittoAcl
from warden.policy.model import default_policy, default_policy_data, parse_policy
from warden.policy.mosquitto import render_mosquitto_acl
from warden.policy.topics import filter_contains, topic_matches, valid_filter

APP = "warden"
REGION, ACCOUNT = "eu-west-1", "210987654321"
THINGS = ["dev-1", "dev-2", "dev-3", "dev-4", "dev-5"]
OPERATOR, TECHNICIAN = "operator.default", "technician.default"


@pytest.fixture(scope="module")
def policy():
    return default_policy()


@pytest.fixture(scope="module")
def acl(policy):
    return MosquittoAcl(render_mosquitto_acl(APP, policy))


@pytest.fixture(scope="module")
def docs(policy):
    return aws.render_aws(policy, APP, REGION, ACCOUNT)


@pytest.fixture(scope="module")
def awsev(docs):
    return aws.AwsEvaluator(docs, REGION, ACCOUNT)


# -- MQTT matching -----------------------------------------------------------------------------
def test_topic_matching_agrees_with_paho():
    levels = ["a", "b", "", "$x", "ota"]
    filters = set()
    topics = set()
    for n in range(1, 4):
        for combo in itertools.product(levels + ["+", "#"], repeat=n):
            f = "/".join(combo)
            if valid_filter(f):
                filters.add(f)
        for combo in itertools.product(levels, repeat=n):
            topics.add("/".join(combo))
    topics.discard("")
    checked = 0
    for f in filters:
        for t in topics:
            if t == "" or f == "":
                continue
            assert topic_matches(f, t) == paho.topic_matches_sub(f, t), (f, t)
            checked += 1
    assert checked > 40000


def test_filter_containment():
    assert filter_contains("a/#", "a/+/b") and filter_contains("a/#", "a")
    assert filter_contains("a/+/c", "a/b/c") and not filter_contains("a/b/c", "a/+/c")
    assert not filter_contains("a/+", "a/#") and not filter_contains("#", "$SYS/x")
    assert filter_contains("+/x", "a/x") and not filter_contains("a/+", "a/b/c")


# -- mosquitto semantics -------------------------------------------------------------------------
def test_mosquitto_acl_semantics():
    acl = MosquittoAcl("\n".join([
        "# comment",
        "topic read anon/#",
        "user alice",
        "topic readwrite a/#",
        "topic deny a/secret/#",
        "topic b",                       # no access word: readwrite
        "pattern write p/%u/#",
        "pattern read q/%c",
        "pattern deny p/%u/locked",
    ]))
    assert acl.allowed("alice", "write", "a/x") and acl.allowed("alice", "read", "a/x")
    assert not acl.allowed("alice", "read", "a/secret/x")     # deny first, whatever the order
    assert acl.allowed("alice", "write", "b")
    assert acl.allowed("alice", "write", "p/alice/x") and not acl.allowed("alice", "read", "p/alice/x")
    assert not acl.allowed("alice", "write", "p/alice/locked")
    assert acl.allowed("bob", "write", "p/bob/1") and not acl.allowed("bob", "write", "p/alice/1")
    assert acl.allowed("bob", "read", "q/bob") and not acl.allowed("bob", "read", "q/bob", client_id="x")
    assert not acl.allowed("ev+l", "write", "p/ev+l/1")       # dangerous usernames get no patterns
    assert not acl.allowed("bob", "write", "a/x")             # not his block
    assert acl.allowed(None, "read", "anon/1") and not acl.allowed("bob", "read", "anon/1")
    assert acl.allowed("bob", "subscribe", "#")               # mosquitto 2.0 grants every subscription
    assert not acl.allowed("alice", "read", "$SYS/x")


@pytest.mark.parametrize("text, fragment", [
    ("topic", "empty topic"), ("topic sometimes a/b", "access type"), ("user", "username"),
    ("topic read a/#/b", "invalid ACL topic"), ("pattern write a+", "invalid ACL topic"), ("grant all", "invalid line"),
])
def test_mosquitto_acl_syntax_errors(text, fragment):
    with pytest.raises(AclSyntaxError) as e:
        MosquittoAcl(text)
    assert fragment in str(e.value)


# -- AWS semantics -------------------------------------------------------------------------------
def test_aws_glob_and_variables():
    v = {"iot:ClientId": "c1", "x": "a*b"}
    assert aws.glob_match("topic/*", "topic/a/b/c", v)               # '*' spans levels
    assert aws.glob_match("topic/a?c", "topic/abc", v) and not aws.glob_match("topic/a?c", "topic/ac", v)
    assert aws.glob_match("t/${iot:ClientId}", "t/c1", v) and not aws.glob_match("t/${iot:ClientId}", "t/c2", v)
    assert not aws.glob_match("t/${iot:Nope}", "t/", v)              # unresolved: matches nothing
    assert aws.glob_match("t/${x}", "t/a*b", v) and not aws.glob_match("t/${x}", "t/aXb", v)  # value is literal
    assert aws.glob_match("t/${*}", "t/*", v) and not aws.glob_match("t/${*}", "t/x", v)
    assert aws.glob_match("t/+/#", "t/+/#", v) and not aws.glob_match("t/+", "t/x", v)  # MQTT chars are literal
    assert aws.glob_match("iot:pub*", "iot:Publish", {}, case=False)


def test_aws_decisions_deny_wins_and_conditions():
    doc = {"Version": "2012-10-17", "Statement": [
        {"Sid": "All", "Effect": "Allow", "Action": "iot:*", "Resource": "*"},
        {"Sid": "No", "Effect": "Deny", "Action": ["iot:Publish"], "Resource": "arn:*:topic/secret"},
        {"Sid": "Cond", "Effect": "Deny", "Action": "iot:Receive", "Resource": "*",
         "Condition": {"StringNotEquals": {"iot:Certificate.Subject.OrganizationalUnit": "device"}}},
    ]}
    ctx = aws.Context(client_id="d", cn="d", ou="device", thing="d")
    assert aws.evaluate(doc, ctx, "iot:Publish", "arn:aws:iot:r:a:topic/x").reason == "allow: All"
    d = aws.evaluate(doc, ctx, "iot:Publish", "arn:aws:iot:r:a:topic/secret")
    assert not d and d.reason == "explicit deny: No"
    assert aws.evaluate(doc, ctx, "iot:Receive", "arn:aws:iot:r:a:topic/x")
    other = aws.Context(client_id="o", cn="o", ou="operator")
    assert not aws.evaluate(doc, other, "iot:Receive", "arn:aws:iot:r:a:topic/x")
    assert aws.evaluate({"Statement": []}, ctx, "iot:Connect", "x").reason == "implicit deny"


@pytest.mark.parametrize("statement, fragment", [
    ({"Effect": "Allow", "NotAction": "iot:Publish", "Resource": "*"}, "NotAction"),
    ({"Effect": "Maybe", "Action": "iot:Publish", "Resource": "*"}, "Effect"),
    ({"Effect": "Allow", "Action": "iot:Publish", "Resource": "*",
      "Condition": {"DateLessThan": {"aws:CurrentTime": "2030"}}}, "DateLessThan"),
])
def test_aws_unsupported_grammar_is_an_error_not_a_guess(statement, fragment):
    with pytest.raises(aws.AwsPolicyError) as e:
        aws.evaluate({"Statement": [statement]}, aws.Context(client_id="x"), "iot:Publish", "t")
    assert fragment in str(e.value)


def test_region_and_account_must_be_concrete(policy):
    for region, account in (("*", ACCOUNT), (REGION, "*"), (REGION, "12"), ("europe", ACCOUNT)):
        with pytest.raises(aws.AwsPolicyError):
            aws.render_aws(policy, APP, region, account)


def test_relaxed_resources():
    assert aws.relaxed("dt/a/{thing}/#", "${T}") == (["dt/a/${T}", "dt/a/${T}/*"], [])
    assert aws.relaxed("dt/a/+/status") == (["dt/a/*/status"], ["dt/a/*/*/status"])
    assert aws.relaxed("#") == (["*"], [])


def test_documents_shape(docs):
    assert set(docs) == {"device", "operator", "technician"}
    text = json.dumps(docs)
    assert '"iot:*"' not in text and '"Resource": "*"' not in text
    connect = docs["device"]["Statement"][0]
    assert connect["Action"] == "iot:Connect"
    assert connect["Resource"] == f"arn:aws:iot:{REGION}:{ACCOUNT}:client/${{iot:Connection.Thing.ThingName}}"
    assert connect["Condition"]["Bool"] == {"iot:Connection.Thing.IsAttached": "true"}
    assert connect["Condition"]["StringEquals"] == {"iot:Certificate.Subject.OrganizationalUnit": "device"}


# -- connect: the client id is pinned to the identity -------------------------------------------
def test_connect_pins_the_client_id(policy, awsev, acl):
    for thing in THINGS:
        assert awsev.allowed(policy, thing, "connect", thing)
        for other in THINGS + [OPERATOR]:
            if other != thing:
                assert not awsev.allowed(policy, thing, "connect", other, client_id=other)
    # not attached to the thing: the thing variables do not resolve
    role, ctx = awsev.context(policy, "dev-1", thing_attached=False)
    assert not aws.evaluate(awsev.docs["device"], ctx, "iot:Connect", aws.arn(REGION, ACCOUNT, "client", "dev-1"))
    # a device certificate (OU device) cannot connect under the operator's policy, and vice versa
    ctx = aws.Context(client_id="dev-1", cn="dev-1", ou="device")
    assert not aws.evaluate(awsev.docs["operator"], ctx, "iot:Connect", aws.arn(REGION, ACCOUNT, "client", "dev-1"))
    ctx = aws.Context(client_id=OPERATOR, cn=OPERATOR, ou="operator", thing=OPERATOR)
    assert not aws.evaluate(awsev.docs["device"], ctx, "iot:Connect", aws.arn(REGION, ACCOUNT, "client", OPERATOR))
    for cn in (OPERATOR, TECHNICIAN):
        assert awsev.allowed(policy, cn, "connect", cn)
        assert not awsev.allowed(policy, cn, "connect", "dev-1", client_id="dev-1")


# -- the matrix ---------------------------------------------------------------------------------
def intended(principal, action, topic):
    """Issue 5 in words, independent of both renderings."""
    lv = topic.split("/")
    if principal in THINGS:
        if action == "publish":
            return topic == f"dt/{APP}/{principal}" or topic.startswith(f"dt/{APP}/{principal}/")
        return topic == f"cmd/{APP}/{principal}" or topic.startswith(f"cmd/{APP}/{principal}/")
    if principal == OPERATOR:
        return action == "subscribe" and len(lv) == 4 and lv[:2] == ["dt", APP] and \
            lv[3] in ("telemetry", "status") and lv[2] != OPERATOR
    if principal == TECHNICIAN:
        kind = "cmd" if action == "publish" else "dt"
        return len(lv) == 4 and lv[:2] == [kind, APP] and lv[3] in ("ota", "config", "logs") and lv[2] != TECHNICIAN
    raise AssertionError(principal)


def matrix_topics():
    out = []
    for t in THINGS + [OPERATOR, TECHNICIAN, "a/b", ""]:
        for kind in ("dt", "cmd"):
            for leaf in ("telemetry", "status", "ota", "logs", "reboot", "ota/chunk", "x/y/z"):
                out.append(f"{kind}/{APP}/{t}/{leaf}")
        out += [f"dt/{APP}/{t}", f"cmd/{APP}/{t}", f"dt/other-app/{t}/telemetry", f"cmd/other/{t}/ota"]
    out += ["dt", "dt/", "cmd", f"dt/{APP}", "$SYS/broker/uptime", f"$aws/things/dev-1/shadow/update",
            f"dt/{APP}/dev-1/telemetry/", f"xdt/{APP}/dev-1/telemetry", f"dt/{APP}/dev-1x/telemetry"]
    return out


def test_matrix_both_renderings_and_the_intent_agree(policy, acl, awsev):
    """>= 5 devices, an operator and a technician, every action on every topic of the matrix:
    the mosquitto ACL, the AWS documents and the issue's words give the same answer."""
    cases = allowed = 0
    for principal in THINGS + [OPERATOR, TECHNICIAN]:
        for topic in matrix_topics():
            for action in ("publish", "subscribe"):
                want = intended(principal, action, topic)
                mosq = acl.allowed(principal, "write" if action == "publish" else "read", topic)
                a = awsev.allowed(policy, principal, action, topic)
                assert mosq == a == want, (principal, action, topic, mosq, a, want)
                cases += 1
                allowed += want
    assert cases > 1500 and 0 < allowed < cases / 4


def test_subscription_filters_on_aws_are_contained_in_a_rule(policy, awsev, acl):
    """AWS refuses a subscription beyond the rules (mosquitto grants it and filters delivery)."""
    ok = {"dev-1": ["cmd/warden/dev-1/#", "cmd/warden/dev-1/+", "cmd/warden/dev-1/ota", "cmd/warden/dev-1"],
          OPERATOR: ["dt/warden/+/telemetry", "dt/warden/dev-2/status"],
          TECHNICIAN: ["dt/warden/+/ota", "dt/warden/dev-3/ota"]}
    bad = {"dev-1": ["#", "cmd/#", "cmd/warden/+/#", "cmd/warden/dev-2/#", "dt/warden/dev-1/#"],
           OPERATOR: ["dt/#", "dt/warden/#", "dt/warden/+/+", "dt/warden/+/ota", "dt/warden/a/b/status"],
           TECHNICIAN: ["dt/warden/+/#", "cmd/warden/+/ota", "dt/warden/+/telemetry"]}
    for who, filters in ok.items():
        for f in filters:
            assert awsev.allowed(policy, who, "subscribe_filter", f), (who, f)
    for who, filters in bad.items():
        for f in filters:
            assert not awsev.allowed(policy, who, "subscribe_filter", f), (who, f)
            assert acl.allowed(who, "subscribe", f)   # mosquitto: granted, delivery filtered


# -- the proof ----------------------------------------------------------------------------------
def test_default_policy_is_proved_equal(policy):
    assert policyproof.prove_policy(policy, APP, REGION, ACCOUNT) == []


def _without(docs, sids):
    out = json.loads(json.dumps(docs))
    for doc in out.values():
        doc["Statement"] = [s for s in doc["Statement"] if not s.get("Sid", "").startswith(sids)]
    return out


@pytest.mark.parametrize("drop, principal, action, witness", [
    # without the one-level Deny, AWS's '*' lets the operator read a deeper topic (a subscription
    # needs iot:Subscribe on a filter and iot:Receive on the topic: both Denies must go)
    (("SubscribeOneLevelOnly", "ReceiveOneLevelOnly"), OPERATOR, "subscribe", "alerts/warden///"),
    (("PublishOneLevelOnly",), TECHNICIAN, "publish", "cmd/warden///ota"),
    # without the own-name denial, mosquitto's patterns and AWS differ for principals
    (("NotItsOwnThingTopics",), TECHNICIAN, "publish", "cmd/warden/technician.default/ota"),
    (("NotItsOwnThing",), OPERATOR, "subscribe", "dt/warden/operator.default/status"),
])
def test_the_proof_finds_a_broken_rendering(policy, docs, drop, principal, action, witness):
    acl_text = render_mosquitto_acl(APP, policy)
    broken = _without(docs, drop)
    bad = policyproof.prove(policy, APP, acl_text, broken, REGION, ACCOUNT)
    hits = [m for m in bad if m.principal == principal and m.action == action]
    assert hits, bad
    m = hits[0]
    assert m.topic == witness, str(m)
    # the witness is real: the evaluators themselves disagree on it
    acl = MosquittoAcl(acl_text)
    ev = aws.AwsEvaluator(broken, REGION, ACCOUNT)
    assert acl.allowed(principal, "write" if action == "publish" else "read", m.topic) == m.mosquitto
    assert ev.allowed(policy, principal, action, m.topic) == m.aws != m.mosquitto


def test_the_proof_finds_a_hand_edited_acl(policy, docs):
    acl_text = render_mosquitto_acl(APP, policy).replace("pattern read cmd/warden/%u/#", "pattern read cmd/#")
    bad = policyproof.prove(policy, APP, acl_text, docs, REGION, ACCOUNT)
    assert any(m.principal == "thing-1" and m.action == "subscribe" and m.mosquitto for m in bad), bad


@pytest.mark.parametrize("rule", [
    {"action": "publish", "topic": "cmd/{app}/+/ota/#"},      # '+' then '#': no AWS equivalent
    {"action": "subscribe", "topic": "#"},                     # AWS '*' reaches $aws topics
])
def test_policies_aws_cannot_express_are_found(rule):
    data = default_policy_data()
    data["roles"]["technician"]["allow"].append(rule)
    bad = policyproof.prove_policy(parse_policy(data), APP)
    assert bad and all(m.principal == TECHNICIAN for m in bad)


def test_overlapping_rules_are_rendered_exactly():
    """A rule another rule covers adds no Deny that would cut into the covering rule."""
    data = default_policy_data()
    data["roles"]["operator"]["allow"].append({"action": "subscribe", "topic": "dt/{app}/#"})
    data["roles"]["device"]["allow"].append({"action": "subscribe", "topic": "cmd/{app}/{thing}/+/x"})
    assert policyproof.prove_policy(parse_policy(data), APP) == []


def test_proof_automata_model_the_evaluators():
    """The proof's NFAs accept exactly what topic_matches and glob_match accept."""
    rng = random.Random(5)
    alphabet = "ab/$"
    filters = ["a/#", "a/+/b", "+/+", "#", "a", "a/+", "+", "$a/#", "a//b", "+/#"]
    globs = ["a/*", "a/*/*/b", "?/a", "*", "a?b*", "$*"]
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        for f in filters:
            g = policyproof.Group(policyproof.mqtt_patterns(f))
            assert g.accepts(g.feed(g.start(), s)) == topic_matches(f, s), (f, s)
        for p in globs:
            g = policyproof.Group([policyproof.aws_pattern(aws.substitute(p, {}))])
            assert g.accepts(g.feed(g.start(), s)) == aws.glob_match(p, s, {}), (p, s)
