# lib/mqtt.py's remaining-length encoding (tests/host/test_mqtt_hostile.py): "LEN <n> <hex>" for
# each length given as an argument; then a PUBLISH over the largest length MQTT allows is refused
# ("BIG <reason>") before anything is sent.
import sys

import mqtt

buf = bytearray(5)
for n in map(int, sys.argv[1:]):
    print("LEN", n, bytes(buf[:mqtt._enc_len(buf, 0, n) - 0]).hex())


class Huge:
    def __len__(self):
        return 268435455


c = mqtt.MQTTClient("x", "127.0.0.1", 1)
try:
    c.publish("t", Huge())
except ValueError as e:
    print("BIG", e)
