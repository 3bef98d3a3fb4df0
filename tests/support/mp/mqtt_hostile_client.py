# lib/mqtt.py against a scripted fake broker (tests/host/test_mqtt_hostile.py): a client `c` for
# 127.0.0.1, then the scenario's action, Python statements from the environment variable
# WARDEN_TEST_ACTION run with `c` and `got` (the first five messages the callback saw) in scope.
# Prints the outcome, then whether the client is still connected and what it got:
#   OUTCOME OK   or   OUTCOME <exception class> | <its message> | <its code attribute>
#   CONNECTED <True|False>
#   GOT [(topic, message), ...]
# Arguments: the broker's port, and the options as JSON: timeout and keepalive (s), ssl (TLS or
# not), ca (a DER file or null: with one, the server must present a certificate for localhost)
# and client (more keyword arguments of MQTTClient).
import json
import os
import sys

from mqtt import MQTTClient

port = int(sys.argv[1])
opt = json.loads(sys.argv[2])
got = []
ctx = None
if opt["ssl"]:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if opt["ca"]:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=opt["ca"])
c = MQTTClient("hostile-test", "127.0.0.1", port, keepalive=opt["keepalive"], timeout=opt["timeout"], ssl=ctx,
               server_hostname="localhost", **opt["client"])
c.set_callback(lambda t, m: len(got) < 5 and got.append((t, m)))
try:
    exec(os.getenv("WARDEN_TEST_ACTION"))
    print("OUTCOME OK")
except Exception as e:
    text = str(e.args[-1]).replace("\n", " ").strip() if e.args else ""
    print("OUTCOME", type(e).__name__, "|", text, "|", getattr(e, "code", None))
print("CONNECTED", c.isconnected())
print("GOT", got)
