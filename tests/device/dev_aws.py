# Device tests: a device configured for AWS IoT Core stays inside AWS IoT's limits, checked by
# the same topic checks the device runs at boot (firmware/topiccheck.py) on the longest names the
# host tools issue (app 32 characters, thing 64): every topic it publishes, the filter it
# subscribes to and every command topic it answers; the client id (the thing name); the
# keepalive (30..1200 s at AWS). docs/aws.md, 'What a device respects'.
# devtest: heap=128k
import devtest
from devtest import raises

from firmware import config, topiccheck
from firmware.device import Device
from firmware.topics import TopicError, Topics

APP = "a" * 32
THING = "t" * 64


def _all_topics(t):
    out = [t.telemetry, t.status, t.ota]
    for name in Device.COMMANDS:
        out.append(t.commands + name.decode())        # what the tools send
        out.append("dt/%s/%s/%s" % (APP, THING, name.decode()))   # what the device answers on
    return out


def test_every_topic_of_the_longest_names_fits_aws_iot():
    t = Topics(APP, THING)
    for topic in _all_topics(t):
        assert topiccheck._topic(topic) == topic
        assert len(topic.encode()) <= 256 and topic.count("/") <= 7, topic
    # the one subscription: a filter, within the same limits (the '#' level is AWS's too)
    assert len(t.command_filter.encode()) <= 256 and t.command_filter.count("/") <= 7
    assert topiccheck.own(t.telemetry, "dt/%s/%s/" % (APP, THING)) == t.telemetry


def test_names_past_aws_limits_are_refused_at_boot():
    raises(TopicError, Topics, APP, "t" * 65)         # a thing name is its certificate CN: at most 64
    raises(TopicError, Topics, "a/b", THING)          # a slash would add levels
    raises(TopicError, topiccheck._topic, "dt/" + "x" * 254)
    raises(TopicError, topiccheck._topic, "dt/a/b/c/d/e/f/g/h")   # 8 slashes


def test_client_id_is_the_thing_name_and_keepalive_is_in_aws_range():
    cfg = config.validate({"thing": THING, "broker": {"host": "x-ats.iot.eu-west-1.amazonaws.com"}})
    assert 30 <= cfg["keepalive"] <= 1200
    raises(config.ConfigError, config.validate, {"thing": THING, "broker": {"host": "h"}, "keepalive": 1201})
    d = Device(cfg, None, {}, (THING, "t", "s", "o", "cmd/%s/%s/" % (APP, THING)))
    d.make_client()          # the session's one client, as the device makes it
    assert d.mqtt.client_id == THING.encode() and len(d.mqtt.client_id) <= 128
    assert d.mqtt.keepalive == cfg["keepalive"] and d.mqtt.port == 8883
