# lib/logstore.py writes the records of a file (tests/host/test_logstore.py), with a fixed clock
# and a counting "random" source the host test reproduces byte for byte.
# Arguments: the log folder, and a file of records, one "KIND HEXPAYLOAD" a line.
import sys
from binascii import unhexlify

import logstore

n = [0]


def rnd(k):
    n[0] += 1
    return bytes([(n[0] * 7 + i) & 255 for i in range(k)])


st = logstore.Store(sys.argv[1], bytes(range(32)), clock=lambda: 1700000000, urandom=rnd)
with open(sys.argv[2]) as f:
    for line in f:
        kind, payload = (line.strip() + " ").split(" ")[:2]
        st.append(int(kind), unhexlify(payload))
st.close()
