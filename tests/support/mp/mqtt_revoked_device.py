# A device on lib/mqtt.py that gets revoked (tests/integration/test_revocation*.py): it connects
# over mutual TLS, subscribes to its commands and prints UP; when the broker cuts it off it prints
# LOST, then tries to connect twice more, printing RECONNECTED or REFUSED for each.
# Arguments: thing, broker host, broker port, and its DER files: CA, certificate, key.
import ssl
import sys

from mqtt import MQTTClient

thing, host, port, ca, cert, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]


def rd(p):
    with open(p, 'rb') as f:
        return f.read()


def ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.verify_mode = ssl.CERT_REQUIRED
    c.load_verify_locations(cadata=rd(ca))
    c.load_cert_chain(rd(cert), rd(key))
    return c


c = MQTTClient(thing, host, port, keepalive=30, ssl=ctx(), timeout=5)
c.connect()
c.subscribe('cmd/warden/%s/#' % thing, 1)
print('UP')
try:
    while True:
        c.wait_msg(0.5)
except Exception as e:
    print('LOST', repr(e))
for attempt in range(2):
    c = MQTTClient(thing, host, port, keepalive=30, ssl=ctx(), timeout=5)
    try:
        c.connect()
        print('RECONNECTED')
    except Exception as e:
        print('REFUSED', repr(e))
