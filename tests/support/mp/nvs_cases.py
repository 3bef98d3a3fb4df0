# The twin's esp32.NVS over the flash file WARDEN_FLASH (tests/host/test_logstore_nvs.py): one
# case, named by the argument, prints its results as one line of JSON.
import json
import sys

import esp32


def err(fn, *a):
    """The error number of the OSError fn(*a) raises, another exception's name, or None."""
    try:
        fn(*a)
    except OSError as e:
        return e.args[0]
    except Exception as e:
        return type(e).__name__
    return None


def host_image():
    """What the host's encoder wrote, and each way a read is refused."""
    n = esp32.NVS("warden")
    buf = bytearray(40)
    k = n.get_blob("log_key", buf)
    small = bytearray(8)
    return [k, bytes(buf[:k]).hex(), n.get_i32("counter"), err(n.get_blob, "log_key", small),
            err(n.get_i32, "log_key"), err(n.get_blob, "missing", buf), err(n.get_i32, "a" * 16),
            esp32.NVS("other").get_blob("log_key", buf), err(esp32.NVS, "x" * 16)]


def commit():
    """A handle's changes: its own until commit(), everyone's after; lost without it."""
    a = esp32.NVS("warden")
    missing = err(a.get_i32, "boots")
    a.set_i32("boots", 1)
    a.set_blob("blob", b"\x01\x02")
    mine = a.get_i32("boots")                          # this handle sees its own change
    other = err(esp32.NVS("warden").get_i32, "boots")  # nobody else does before commit()
    a.commit()
    after = esp32.NVS("warden").get_i32("boots")
    b = esp32.NVS("warden")
    b.set_i32("boots", 2)                              # never committed: lost
    return [missing, mine, other, after, err(a.erase_key, "nope"), err(a.set_i32, "big", 2**31)]


def erase_key():
    n = esp32.NVS("warden")
    n.erase_key("a")
    n.commit()
    return [err(esp32.NVS("warden").get_i32, "a"), err(n.erase_key, "a")]


def set_n():
    n = esp32.NVS("warden")
    n.set_i32("n", 2)
    n.commit()                # goes to the other slot with the next generation
    return n.get_i32("n")


def get_n():
    return esp32.NVS("warden").get_i32("n")


def two_namespaces():
    """A blob and a number in one namespace, a number in another, committed in two slots."""
    n = esp32.NVS("warden")
    n.set_blob("log_key", bytes(range(32)))
    n.set_i32("z", 5)
    n.commit()
    esp32.NVS("aaa").set_i32("k", -1)
    m = esp32.NVS("aaa")
    m.set_i32("k", -1)
    m.commit()
    return 1


print(json.dumps(globals()[sys.argv[1]]()))
