# A log with every kind of record (tests/host/test_logstore.py): 400 appends in a small quota
# (segments roll and drop: DROP records), then a torn record at the end of the last segment,
# which the next open marks with a CUT record. Argument: the log folder.
import os
import sys

import logstore

d = sys.argv[1]
st = logstore.Store(d, bytes(range(32)), quota=49152, segment=4096, clock=lambda: 1700000000)
for i in range(400):
    st.append(logstore.READING if i % 2 else logstore.EVENT, b"record %d" % i)
st.close()
last = sorted(os.listdir(d))[-1]
with open(d + "/" + last, "ab") as f:
    f.write(b"Wr\x30\x00" + bytes(20))
st = logstore.Store(d, bytes(range(32)), quota=49152, segment=4096, clock=lambda: 1700000000)
st.append(logstore.EVENT, b"INFO after: reopened")
st.close()
