# Durable appends to a log store (tests/host/test_logstore.py).
# Arguments: the log folder, how many records, a word for their text, and optionally the
# high-water mark file.
import sys

import logstore

st = logstore.Store(sys.argv[1], bytes(range(32)), clock=lambda: 1700000000,
                    hw=sys.argv[4] if len(sys.argv) > 4 else None)
for i in range(int(sys.argv[2])):
    st.append(logstore.EVENT, b"INFO %s: %d" % (sys.argv[3].encode(), i), True)
st.close()
