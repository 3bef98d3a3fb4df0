# Stand-in for the ESP32 port's `machine` (tests/device/dev_board_hal.py only): the unix port
# has no WDT, ADC, I2C or deep sleep. Same names, arguments and constants as the port
# (micropython-esp32-stubs 1.29); every call is recorded in `calls` for the test to check.
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

calls = []
cause = PWRON_RESET
uv = {}  # pin -> microvolts read_uv() returns


class Sleeping(Exception):
    """deepsleep() never returns on a board; here it raises this."""


def reset_cause():
    return cause


def unique_id():
    return b"\x24\x6f\x28\x01\x02\x03"


def reset():
    raise Sleeping("reset")


def deepsleep(time_ms=0):
    calls.append(("deepsleep", time_ms))
    raise Sleeping(time_ms)


class Pin:
    def __init__(self, id, *args, **kw):
        self.id = id


class WDT:
    def __init__(self, *, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        calls.append(("WDT", timeout))
        self.timeout = timeout

    def feed(self):
        calls.append(("feed",))


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, id, *, atten=ATTN_0DB):
        calls.append(("ADC", id.id, atten))
        self.pin = id.id

    def read_uv(self):
        return uv.get(self.pin, 0)


class I2C:
    def __init__(self, id, *, scl, sda, freq=400000, timeout=50000):
        calls.append(("I2C", id, scl.id, sda.id, freq))

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        return bytes(range(memaddr, memaddr + nbytes))
