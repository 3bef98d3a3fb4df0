# The device's status message (firmware/device.py; tests/host/test_policy_device.py): with
# cert_days in the config it carries the certificate-expiry warning, without it none.
# Prints the two messages, one JSON object a line.
from firmware import device


class F:
    pass


f = F()
f.cfg = {'cert_days': 12}
print(device.Device._status(f, 'online'))
f.cfg = {}
print(device.Device._status(f, 'online'))
