# The log store's heap on the device (tests/host/test_logstore.py): what an open store keeps
# resident (its helpers for opening and reading unloaded) and what one durable append allocates.
# Argument: the log folder. Prints "RESULT <resident bytes> <bytes per append>".
import gc
import sys
import time

gc.collect()
before = gc.mem_alloc()
import logstore  # after the first measurement: its cost is what is measured

st = logstore.Store(sys.argv[1], bytes(range(32)), clock=time.time)
sys.modules.pop("logopen", None)
sys.modules.pop("cryptokit", None)
sys.modules.pop("logread", None)
gc.collect()
resident = gc.mem_alloc() - before
st.append(2, b"warm up", True)
gc.collect()
gc.disable()
a = gc.mem_alloc()
for i in range(20):
    st.append(2, b'{"seq":1,"values":{"t":21.5}}', True)
per = (gc.mem_alloc() - a) // 20
gc.enable()
print("RESULT", resident, per)
