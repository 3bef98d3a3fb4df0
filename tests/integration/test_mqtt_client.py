"""lib/mqtt.py under the real micropython (-X heapsize=64k, compiled to .mpy) against the real
TLS mosquitto of the fixtures: mutual TLS with CERT_REQUIRED and DER identities, QoS 0/1 order
seen by a paho operator, commands received, last will, keepalive, reconnect + resubscribe.

Synchronisation is by MQTT messages and process output with deadlines, never by sleeping.
"""
import threading

import pytest

from support.devrun import Background, run_mp

DEADLINE = 15  # seconds any one device run may take


def device_code(dev, broker, body, *, keepalive=30, as_bytes=True):
    """A MicroPython program: a verifying TLS context from dev's DER files, a client `c`, then body."""
    if as_bytes:
        load = (f"ctx.load_verify_locations(cadata=open({str(dev.ca)!r}, 'rb').read())\n"
                f"ctx.load_cert_chain(open({str(dev.cert)!r}, 'rb').read(), open({str(dev.key)!r}, 'rb').read())")
    else:
        load = (f"ctx.load_verify_locations(cafile={str(dev.ca)!r})\n"
                f"ctx.load_cert_chain({str(dev.cert)!r}, {str(dev.key)!r})")
    return f"""
import gc, ssl, sys, time
from mqtt import *
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
{load}
THING = {dev.thing!r}
c = MQTTClient(THING, {broker.host!r}, {broker.port}, ssl=ctx, keepalive={keepalive}, timeout=5)
got = []
c.set_callback(lambda t, m: got.append((t, m)))
def until(ms, cond):
    t0 = time.ticks_ms()
    while not cond() and time.ticks_diff(time.ticks_ms(), t0) < ms:
        c.wait_msg(0.2)
    return cond()
{body}
"""


def run_device(code, mpy_dir):
    r = run_mp(code, heap="64k", path=[mpy_dir], timeout=DEADLINE)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture
def background():
    procs = []

    def make(code, mpy_dir):
        p = Background(code, [mpy_dir], DEADLINE)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.kill()


def in_thread(fn):
    """Run fn() in a thread; the returned function joins it and returns its result or raises."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the test thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()

    def join():
        t.join(DEADLINE + 5)
        assert not t.is_alive(), "device run did not finish"
        if "error" in box:
            raise box["error"]
        return box["value"]
    return join


def test_mutual_tls_connect_and_qos0_qos1_order(broker, provision, mqtt_client, mpy_dir, pki_state):
    dev = provision("mq-order")
    base = f"dt/{pki_state.app}/{dev.thing}"
    op = mqtt_client("observer")
    op.subscribe(f"{base}/#", qos=1)
    body = f"""
print("SP", c.connect())
gc.collect()
print("HEAP", gc.mem_alloc())
for i in range(10):
    c.publish({base + '/q0'!r}, "q0-%d" % i)
    c.publish({base + '/q1'!r}, b"q1-%d" % i, qos=1)
c.publish({base + '/end'!r}, "end", qos=1)
c.disconnect()
print("DONE")
"""
    out = run_device(device_code(dev, broker, body, as_bytes=False), mpy_dir)
    assert "SP 0" in out and "DONE" in out
    heap = int(out.split("HEAP ")[1].split()[0])
    assert heap < 32 * 1024, out  # client + TLS socket after connect, well inside the 64 KB budget
    op.expect(f"{base}/end")
    q0 = [m.payload for m in op.history if m.topic == f"{base}/q0"]
    q1 = [m.payload for m in op.history if m.topic == f"{base}/q1"]
    assert q0 == [b"q0-%d" % i for i in range(10)]
    assert q1 == [b"q1-%d" % i for i in range(10)]


def test_subscribe_and_receive_a_command(broker, provision, mqtt_client, mpy_dir, pki_state):
    dev = provision("mq-cmd")
    app = pki_state.app
    op = mqtt_client("observer")
    op.subscribe(f"dt/{app}/{dev.thing}/#", qos=1)
    body = f"""
c.connect()
print("GRANTED", c.subscribe("cmd/{app}/" + THING + "/#", 1))
c.publish("dt/{app}/" + THING + "/ready", "1", qos=1)
print("RECEIVED" if until({DEADLINE * 700}, lambda: got) else "NOTHING", got)
c.disconnect()
"""
    join = in_thread(lambda: run_device(device_code(dev, broker, body), mpy_dir))
    op.expect(f"dt/{app}/{dev.thing}/ready")
    op.publish(f"cmd/{app}/{dev.thing}/reboot", b'{"delay": 3}', qos=1)
    out = join()
    assert "GRANTED 1" in out
    assert f"RECEIVED [(b'cmd/{app}/{dev.thing}/reboot', b'{{\"delay\": 3}}')]" in out, out


def test_last_will_is_published_on_abrupt_close(broker, provision, mqtt_client, mpy_dir, pki_state, background):
    dev = provision("mq-will")
    status = f"dt/{pki_state.app}/{dev.thing}/status"
    op = mqtt_client("observer")
    op.subscribe(status, qos=1)
    body = f"""
c.set_last_will({status!r}, "offline", qos=1)
c.connect()
c.publish({status!r}, "online", qos=1)
print("ONLINE")
until({DEADLINE * 1000}, lambda: False)
"""
    p = background(device_code(dev, broker, body), mpy_dir)
    assert op.expect(status).payload == b"online"
    p.kill()  # a power cut: no DISCONNECT, the broker must publish the will
    assert op.expect(status).payload == b"offline"


def test_clean_disconnect_discards_the_will(broker, provision, mqtt_client, mpy_dir, pki_state):
    dev = provision("mq-nowill")
    base = f"dt/{pki_state.app}/{dev.thing}"
    op = mqtt_client("observer")
    op.subscribe(f"{base}/#", qos=1)
    body = f"""
c.set_last_will({base + '/status'!r}, "offline")
c.connect()
c.disconnect()
c.set_last_will({base + '/status'!r}, "offline-2")
c.connect()
c.publish({base + '/marker'!r}, "after", qos=1)
c.disconnect()
"""
    run_device(device_code(dev, broker, body), mpy_dir)
    op.expect(f"{base}/marker")
    assert [m.payload for m in op.history] == [b"after"]


def test_keepalive_pings_keep_an_idle_link(broker, provision, mqtt_client, mpy_dir, pki_state):
    """keepalive=1: mosquitto drops a client silent for 1.5 s; pings keep it connected for 2.2 s."""
    dev = provision("mq-ping")
    base = f"dt/{pki_state.app}/{dev.thing}"
    op = mqtt_client("observer")
    op.subscribe(f"{base}/#", qos=1)
    body = f"""
pings = []
real_ping = c.ping
def counting_ping():
    pings.append(1)
    real_ping()
c.ping = counting_ping
c.connect()
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 2200:
    c.wait_msg(0.5)
c.publish({base + '/alive'!r}, "yes", qos=1)
print("PINGS", len(pings), "PENDING", c._ping_t >= 0)
c.disconnect()
"""
    out = run_device(device_code(dev, broker, body, keepalive=1), mpy_dir)
    pings = int(out.split("PINGS ")[1].split()[0])
    assert 3 <= pings <= 6, out  # one per 0.5 s of silence
    assert op.expect(f"{base}/alive").payload == b"yes"


def test_broker_restart_reconnect_and_resubscribe(broker, provision, mqtt_client, mpy_dir, pki_state, background):
    dev = provision("mq-restart")
    app = pki_state.app
    body = f"""
c.connect()
c.subscribe("cmd/{app}/" + THING + "/#", 1)
print("UP")
try:
    until({DEADLINE * 1000}, lambda: False)
except OSError as e:
    print("LOST", type(e).__name__, e.args)
t0 = time.ticks_ms()
while True:
    try:
        c.connect()
        break
    except OSError as e:  # refused while mosquitto restarts
        if time.ticks_diff(time.ticks_ms(), t0) > {DEADLINE * 1000}:
            raise
        time.sleep_ms(50)
c.resubscribe()
print("RESUBSCRIBED")
print("GOT" if until({DEADLINE * 1000}, lambda: got) else "NOTHING", got)
"""
    p = background(device_code(dev, broker, body), mpy_dir)
    p.expect("UP")
    broker.restart()
    assert "OSError" in p.expect("LOST")
    p.expect("RESUBSCRIBED")  # printed once the new SUBACK arrived
    op = mqtt_client("observer")
    op.publish(f"cmd/{app}/{dev.thing}/ping", b"after-restart", qos=1)
    line = p.expect("GOT")
    assert "b'after-restart'" in line
    assert p.wait() == 0
