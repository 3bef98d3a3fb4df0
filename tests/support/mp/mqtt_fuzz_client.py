# lib/mqtt.py against a fuzzing broker (tests/host/test_mqtt_fuzz.py): one client per case, each
# connects and waits for three messages; any error but the documented ones (OSError, MQTTError)
# is counted as UNEXPECTED. Arguments: cases, the broker's port on 127.0.0.1, the client's
# timeout (s). Prints the outcome counts, the slowest case (ms) and the heap every 200 cases.
import gc
import sys
import time

from mqtt import MQTTClient, MQTTError

cases, port, tmo = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
counts = {}
worst = 0
heaps = []
for i in range(cases):
    t0 = time.ticks_ms()
    c = MQTTClient("fuzz", "127.0.0.1", port, timeout=tmo)
    c.set_callback(lambda t, m: None)
    try:
        c.connect()
        for _ in range(3):
            c.wait_msg(0.05)
        outcome = "ok"
    except (OSError, MQTTError) as e:
        outcome = type(e).__name__
    except Exception as e:
        outcome = "UNEXPECTED " + type(e).__name__ + " " + str(e)
    try:
        c.disconnect()
    except Exception as e:
        outcome = "UNEXPECTED in disconnect " + type(e).__name__
    counts[outcome] = counts.get(outcome, 0) + 1
    worst = max(worst, time.ticks_diff(time.ticks_ms(), t0))
    if i % 200 == 0 or i == cases - 1:
        gc.collect()
        heaps.append(gc.mem_alloc())
print("COUNTS", counts)
print("WORST", worst)
print("HEAPS", heaps)
