# Device tests for firmware/ota.py on a booted twin flash: good updates install into
# the inactive slot; every attack is refused with its reason and leaves the device as it was.
# devtest: needs=ota_vectors
# devtest: heap=160k  (this test module is compiled from source; dev_ota_heap.py measures the engine at 64k)
import gc
import json

import devtest
import otadev
from otadev import C, TARGET, exists, install, read, stream, update

otadev.boot_flash()

import esp32  # noqa: E402  (the twin's, found through /host after the boot)

from firmware import ota, ota_state, slots  # noqa: E402

P = esp32.Partition


def snapshot():
    """Everything an update must not touch when it is refused."""
    return (P(P.RUNNING).info()[4], P(P.BOOT).info()[4], slots.read(), read("/state/ota.json"),
            exists("/state/ota.pending"), exists("/app/a"), exists("/app/b"))


def refused(name, reason, kind=None, payload=False):
    """Begin (and stream, if the checks pass) update `name`; it must fail with `reason`."""
    before = snapshot()
    u = ota.Updater(TARGET)
    m, s, off, size = update(name)
    try:
        u.begin(m, s, kind)
        if payload:
            stream(u, name)
            u.finish()
        raise AssertionError("%s accepted" % name)
    except ota.OTAError as e:
        assert reason in e.args[0], "%s: %r" % (name, e.args[0])
        got = e.args[0]
    assert snapshot() == before, "%s changed the device" % name
    assert not exists("/state/ota.pending")
    return got


def test_app_update_unpacks_into_the_inactive_slot_and_swaps_only_at_the_end():
    before = read("/state/ota.json")
    u = ota.Updater(TARGET)
    m, s, off, size = update("app")
    assert u.begin(m, s, "app") == 0
    half = stream(u, "app", stop=size // 2)
    assert slots.read() == ("-", "valid", "-")  # nothing swapped while receiving
    assert stream(u, "app", start=half) == size
    p = u.finish()
    assert p == {"kind": "app", "version": "2.0.0", "counter": 4, "slot": "a", "prev": "-"}
    assert slots.read() == ("a", "new", "-")
    assert exists("/app/a/firmware/app.mpy") and exists("/app/a/lib/rsapss.mpy")
    assert not exists("/app/stage") and not exists("/state/ota.job")
    assert json.loads(read("/state/ota.pending"))["version"] == "2.0.0"
    assert read("/state/ota.json") == before  # the counter is persisted at confirm, not before
    # until the reset, nothing can be confirmed or started
    assert ota_state.confirm() is None and slots.read()[1] == "new"
    assert ota_state.pending() is None  # not judged before the reset either
    e = devtest.raises(ota.OTAError, u.begin, *update("app_v3")[:2])
    assert "reset to run it" in e.args[0]


def test_firmware_update_writes_the_next_slot_and_sets_boot():
    u = ota.Updater(TARGET)
    p = install(u, "firmware", "firmware")
    assert p["slot"] == "ota_1" and p["prev"] == "ota_0"
    assert P(P.RUNNING).info()[4] == "ota_0" and P(P.BOOT).info()[4] == "ota_1"
    import bootloader
    assert bootloader.verify(P("ota_1")) is None and bootloader.app_version(P("ota_1")) == "2.0.0"


def test_transport_drop_resumes_at_the_offset_begin_returns():
    u = ota.Updater(TARGET)
    m, s, off, size = update("firmware")
    assert u.begin(m, s) == 0
    got = stream(u, "firmware", chunk=700, stop=100000)
    assert got == 100000
    assert u.begin(m, s) == 100000  # the same update again (a new session): carry on
    assert u.write(0, b"\xe9" * 100) == 100000  # old bytes are skipped, not rewritten
    assert u.write(100100, b"x" * 10) == 100000  # a gap is ignored
    assert stream(u, "firmware", chunk=3000, start=99000) == size  # overlaps are trimmed
    assert u.finish()["slot"] == "ota_1"


def _shortage_then_resume(name, kind, fail_at):
    """A MemoryError while a chunk is written, at each of the points `fail_at` (the nth sink
    write): refused with a reason, the running image as it was, and what was durable kept: a new
    Updater (the next push) resumes from where it was; then the whole update installs."""
    for n in fail_at:
        before = snapshot()
        u = ota.Updater(TARGET)
        m, sig, off, size = update(name)
        start = u.begin(m, sig, kind)
        real, calls = u._sink.write, [0]

        def short(mv, real=real, calls=calls, n=n):
            calls[0] += 1
            if calls[0] == n:
                raise MemoryError("memory allocation failed, allocating 2054 bytes")
            return real(mv)
        u._sink.write = short     # this transfer's sink only
        e = devtest.raises(ota.OTAError, stream, u, name, 1024, start)
        assert "MemoryError" in e.args[0] and snapshot() == before, e.args
        again = ota.Updater(TARGET).begin(m, sig, kind)
        assert again >= start, (name, n, start, again)   # nothing durable was thrown away
        assert again > 0 or n != fail_at[-1], (name, n)   # (by the last point, some of it was durable)
    u = ota.Updater(TARGET)
    m, sig, off, size = update(name)
    assert stream(u, name, 1024, u.begin(m, sig, kind)) == size
    assert u.finish()["kind"] == kind


def test_a_heap_shortage_during_a_firmware_transfer_leaves_it_resumable():
    _shortage_then_resume("firmware", "firmware", (3, 40, 90))


def test_a_heap_shortage_during_an_app_transfer_leaves_it_resumable():
    _shortage_then_resume("app", "app", (2, 30))


def test_bad_signature():
    refused("bad_signature", "bad signature: the manifest was altered or not signed by key")


def test_unknown_key():
    refused("unknown_key", "unknown signing key ")


def test_manifest_altered_after_signing():
    r = refused("manifest_altered", "bad signature: the manifest was altered")
    assert "hash does not match" in r


def test_payload_altered():
    refused("payload_altered", "payload altered: its SHA-256 does not match", payload=True)


def test_payload_cut_short():
    before = snapshot()
    u = ota.Updater(TARGET)
    m, s, off, size = update("firmware")
    u.begin(m, s)
    stream(u, "firmware", stop=size - 1)
    e = devtest.raises(ota.OTAError, u.finish)
    assert e.args[0] == "payload short: %d of %d bytes" % (size - 1, size)
    assert snapshot() == before


def test_payload_too_long():
    refused("payload_long", "payload too long: more than the signed", payload=True)
    assert not exists("/state/ota.job")  # the job is dropped


def test_too_large_for_the_slot():
    refused("too_large_firmware", "too large for the slot: %d bytes > %d" % (0x180001, 0x180000))
    refused("too_large_app", "too large for the slot: %d bytes" % (C["app_max"] + 1))


def test_wrong_target():
    refused("wrong_target", "wrong target: the update is for 'esp32/other', this device is 'esp32/warden'")


def test_wrong_kind():
    refused("firmware", "wrong kind: the update is 'firmware', expected 'app'", kind="app")
    refused("app", "wrong kind: the update is 'app', expected 'firmware'", kind="firmware")
    refused("unknown_kind", "wrong kind: 'bootloader' is not app, firmware or keys")


def test_counter_equal_is_a_replay():
    refused("counter_equal", "counter 3 is not newer than the installed 3 (replay)")


def test_counter_lower_is_a_downgrade():
    refused("counter_lower", "downgrade: counter 2 is lower than the installed 3")


def test_malformed_and_oversized_manifests():
    refused("malformed_manifest", "manifest malformed: ends before field 8")
    refused("oversized_manifest", "manifest oversized: ")
    refused("unsupported_alg", "unsupported algorithm 'rsa2048-pkcs1-sha1'")
    u = ota.Updater(TARGET)
    for junk in (b"", b"WMF1", b"\xff" * 100, b"WMF1\x01\xff"):
        e = devtest.raises(ota.OTAError, u.begin, junk, b"")
        assert e.args[0].startswith("manifest malformed"), e.args[0]


def test_broken_esp32_header_is_refused_with_the_first_block():
    before = snapshot()
    u = ota.Updater(TARGET)
    m, s, off, size = update("broken_header")
    u.begin(m, s)
    e = devtest.raises(ota.OTAError, stream, u, "broken_header", 4096)
    assert e.args[0] == "broken ESP32 image: invalid magic byte 0x00"
    assert snapshot() == before and not exists("/state/ota.job")


def test_broken_esp32_checksum_is_refused_by_set_boot():
    r = refused("broken_checksum", "broken ESP32 image: set_boot refused it (ESP_ERR_OTA_VALIDATE_FAILED)",
                payload=True)
    assert r


def test_malformed_signed_bundle_is_refused_at_unpack():
    refused("malformed_bundle", "malformed app bundle: path 'firmware/../keys/x.pk' has a bad component '..'",
            payload=True)
    assert not exists("/keys/x.pk") and not exists("/app/a/identity")


def test_begin_refuses_before_touching_anything_and_writes_need_begin():
    u = ota.Updater(TARGET)
    assert devtest.raises(ota.OTAError, u.write, 0, b"x").args[0] == "no update in progress: begin first"
    assert devtest.raises(ota.OTAError, u.finish).args[0] == "no update in progress: begin first"


def test_corrupt_security_state_refuses_updates():
    with open("/state/ota.json", "w") as f:
        f.write('{"firmware": [3, ')
    refused("firmware", "security state /state/ota.json is corrupt: updates refused")


def test_corrupt_trusted_key_file_is_refused():
    import os
    name = [n for n in os.listdir("/keys") if n.endswith(".pk")][0]
    d = read("/keys/" + name)
    with open("/keys/" + name, "wb") as f:
        f.write(d[:-1])
    refused("firmware", "trusted key /keys/%s is corrupt or not RSA-3072" % name)


def test_slots_fall_back_to_the_factory_app_on_a_bad_pointer_or_a_missing_slot():
    import os
    import sys
    os.mkdir("/app")
    for junk in ("", "a", "a new", "c new -", "a valid x", "a maybe -"):
        with open("/app/active", "w") as f:
            f.write(junk)
        assert slots.read() == ("-", "valid", "-"), junk
    # a slot that is named but missing: back to the previous one, then to the factory app
    with open("/app/active", "w") as f:
        f.write("b valid a")
    path = sys.path[:]
    assert slots.boot() == "-"
    assert sys.path == path  # the factory app keeps the ROM's path
    assert not exists("/app/active")
    # a present slot goes first on the path, its lib next
    os.mkdir("/app/a")
    os.mkdir("/app/a/firmware")
    with open("/app/active", "w") as f:
        f.write("a new -")
    assert slots.boot() == "a" and slots.read() == ("a", "trying", "-")
    assert sys.path[:3] == ["/app/a", "/app/a/lib", ".frozen"]
    assert "firmware" not in sys.modules and "firmware.slots" not in sys.modules
    sys.path[:] = path
