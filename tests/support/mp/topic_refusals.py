# The device's topic guard (firmware/topics.py; tests/host/test_policy_device.py): every publish
# topic outside its own, with wildcards or too long for AWS IoT, and every bad thing name, is
# refused (RAISED ...; the device log says why); the device's own topics pass (OK ...).
from firmware import topics

t = topics.Topics('warden', 't-1')
for bad in ('dt/warden/t-2/telemetry', 'dt/warden/t-1/#', 'dt/warden/+/telemetry', 'cmd/warden/t-1/x',
            'dt/warden/t-1/' + 'a/' * 6, 'dt/warden/t-1/' + '\u00e9' * 130):
    try:
        t.guard_publish(bad)
        print('ALLOWED', bad)
    except topics.TopicError as e:
        print('RAISED', e)
for name in ('a/b', 'x#', '$sys', ''):
    try:
        topics.Topics('warden', name)
        print('ALLOWED', name)
    except topics.TopicError as e:
        print('RAISED', e)
print('OK', t.guard_publish(t.telemetry), t.guard_publish('dt/warden/t-1/ota'))
