# Helpers for device tests (MicroPython). The host harness (tests/conftest.py) sets
# WARDEN_DEVTEST_TMP to a fresh folder for each test and WARDEN_DEVTEST_CTX to a JSON
# file with whatever fixtures the module declared (`# devtest: needs=...`).
import json
import os

tmp = os.getenv("WARDEN_DEVTEST_TMP")


def ctx():
    path = os.getenv("WARDEN_DEVTEST_CTX")
    with open(path) as f:
        return json.load(f)


def raises(exc, fn, *args, **kw):
    """Call fn and return the exception of type `exc` it raises; fail if it does not."""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %s" % (exc.__name__, fn))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
