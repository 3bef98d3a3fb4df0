"""`warden ota rollback`: back to the version in the other slot without a download, signed and
counter-checked as an update is, and refused when there is nothing valid to go back to or the
counter is not newer. Real twins, a real broker."""
import pytest

from support.twinproc import Twin
from warden.board import espimage, twin as twinlib
from warden.fleet import devices
from warden.ota import image, keys, push as otapush


@pytest.fixture
def fleet(pki_state, broker):
    if not keys.has_key(pki_state):
        keys.init_keys(pki_state)
    pki_state.broker_port = broker.port
    return pki_state


@pytest.fixture
def twin(fleet, broker):
    made = []

    def make(thing):
        devices.add_device(fleet, thing)
        path = twinlib.flash_path(fleet, thing)
        twinlib.update_config(path, broker={"host": "localhost", "port": broker.port}, interval_ms=100,
                              selftest_ms=10000)
        t = Twin(path, heap=twinlib.DEFAULT_HEAP).start()
        t.wait_for(r"INFO telemetry: first reading", 15)
        made.append(t)
        return t

    yield make
    for t in made:
        t.stop()


def push(fleet, thing, tmp_path, payload, kind, version, counter):
    p = tmp_path / f"{kind}-{counter}.wup"
    p.write_bytes(image.sign(payload, kind, version, counter, image.default_target(fleet),
                             keys.load_private_key(fleet)))
    out = otapush.push(fleet, thing, p, confirm_timeout=30)
    assert out.result == otapush.INSTALLED, out
    return out


def test_an_app_rolls_back_to_the_version_in_its_other_slot_without_a_download(fleet, twin, tmp_path):
    t = twin("rb-app")
    push(fleet, "rb-app", tmp_path, image.build_bundle(), "app", "2.0.0", 10)
    push(fleet, "rb-app", tmp_path, image.build_bundle(), "app", "3.0.0", 11)
    assert otapush.status(fleet, "rb-app")["device"]["app"]["slot"] == "b"
    seen = len(t.lines)
    out = otapush.rollback(fleet, "rb-app", "app", confirm_timeout=30)
    assert out.result == otapush.INSTALLED and out.version == "2.0.0" and out.counter == 12, out
    assert out.bytes_sent == 0
    t.wait_for(r"INFO ota: self-test passed: app 2.0.0 confirmed", 20)
    assert "INFO ota: rolling back to app 2.0.0" in "\n".join(t.lines[seen:])
    st = otapush.status(fleet, "rb-app")["device"]
    assert st["app"] == {"counter": 12, "version": "2.0.0", "slot": "a"}, st
    # the same rollback again: the counter is not newer (a replay), and 3.0.0 is now the other
    again = otapush.rollback(fleet, "rb-app", "app", counter=12)
    assert again.result == otapush.REJECTED and "replay" in again.reason, again


def test_nothing_to_roll_back_to_is_refused_by_the_tool_and_by_the_device(fleet, twin):
    twin("rb-none")
    with pytest.raises(otapush.OtaPushError, match="no other app to roll back to"):
        otapush.rollback(fleet, "rb-none", "app")
    out = otapush.rollback(fleet, "rb-none", "app", local_check=False)
    assert out.result == otapush.REJECTED and "nothing to roll back to" in out.reason, out


def test_a_firmware_rollback_checks_the_partition_still_holds_it(fleet, twin, tmp_path):
    t = twin("rb-fw")
    push(fleet, "rb-fw", tmp_path, espimage.build_image("1.30.0", 128 * 1024), "firmware", "1.30.0", 20)
    # ota_0 holds the factory firmware, which no update recorded: nothing signed to go back to
    out = otapush.rollback(fleet, "rb-fw", "firmware", local_check=False)
    assert out.result == otapush.REJECTED and "nothing to roll back to" in out.reason, out
    push(fleet, "rb-fw", tmp_path, espimage.build_image("1.31.0", 128 * 1024), "firmware", "1.31.0", 21)
    out = otapush.rollback(fleet, "rb-fw", "firmware", confirm_timeout=30)
    assert out.result == otapush.INSTALLED and out.version == "1.30.0" and out.counter == 22, out
    t.wait_for(r"INFO ota: self-test passed: firmware 1.30.0 confirmed", 20)
    assert otapush.status(fleet, "rb-fw")["device"]["firmware"]["slot"] == "ota_1"
