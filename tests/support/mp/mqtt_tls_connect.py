# A client on lib/mqtt.py with a device's identity, bypassing the device's own checks
# (tests/integration/test_twin.py): it connects over mutual TLS and prints CONNECTED, or
# CONNECT-FAILED <error> and stops; then runs the test's action (Python statements from the
# environment variable WARDEN_TEST_ACTION, with the client `c` in scope), if any.
# Arguments: client id, broker port (on localhost), and the DER files: CA, certificate, key.
import os
import ssl
import sys

from mqtt import MQTTClient

cid, port, ca, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def rd(p):
    with open(p, 'rb') as f:
        return f.read()


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cadata=rd(ca))
ctx.load_cert_chain(rd(cert), rd(key))
c = MQTTClient(cid, 'localhost', port, keepalive=30, ssl=ctx, timeout=5)
try:
    c.connect()
    print('CONNECTED')
except Exception as e:
    print('CONNECT-FAILED', repr(e))
    raise SystemExit
exec(os.getenv('WARDEN_TEST_ACTION', ''))
