# Appends to a log store on the twin's flash (WARDEN_FLASH) until it is killed
# (tests/integration/test_logstore_powercut.py): mounts the vfs partition at /f (formatting a
# blank one), opens /f/log, prints "OPEN <next seq>", then appends forever; every record it
# acknowledges as durable is printed as "A <seq> <n>". Arguments: seed (also the clock), quota
# and segment size in bytes.
import os
import sys

import esp32

vfs = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0]
try:
    fs = os.VfsLfs2(vfs)
except OSError:
    os.VfsLfs2.mkfs(vfs)
    fs = os.VfsLfs2(vfs)
os.mount(fs, "/f")
import logstore  # noqa: E402  (once the flash is mounted, at 64 KB of heap)

seed, quota, segment = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
st = logstore.Store("/f/log", bytes(range(32)), quota=quota, segment=segment, clock=lambda: seed)
print("OPEN", st.next_seq)
n = 0
while True:
    n += 1
    payload = b"%d-%d:" % (seed, n) + b"x" * ((n * 37 + seed) % 150)
    if n % 3 == 0:
        print("A", st.append(2, payload, True), n)
    elif n % 7 == 0:
        seq = st.append(1, payload)
        st.sync()
        print("A", seq, n)
    else:
        st.append(2, payload)   # buffered: may be lost, never acknowledged
