"""Signing keys, the manifest and update file, app bundles, and the CLI (keys init, sign, ota inspect,
build app --bundle): good updates verify, every kind of bad one is refused with its precise reason."""
import hashlib
import os
import stat
import struct

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from support import otakit as kit
from warden.board import espimage
from warden.cli import main
from warden.ota import image, keys
from warden.ota.image import UpdateError
from warden.state import State


@pytest.fixture
def state(tmp_path):
    return State(tmp_path / "st")


# -- keys ---------------------------------------------------------------------------------------
def test_keys_init_makes_a_private_0600_rsa3072_key_with_its_id(state):
    info = keys.init_keys(state)
    assert stat.S_IMODE(os.stat(info.private_path).st_mode) == 0o600
    key = serialization.load_der_private_key(info.private_path.read_bytes(), None)
    assert key.key_size == 3072 and key.public_key().public_numbers().e == 65537
    spki = info.public_path.read_bytes()
    assert info.key_id == hashlib.sha256(spki).digest()[:8].hex()
    kid, e, n = keys.parse_device_key_file(info.device_path.read_bytes())
    assert kid.hex() == info.key_id and e == 65537 and len(n) == 384
    assert int.from_bytes(n, "big") == key.public_key().public_numbers().n
    assert keys.device_files(state) == {"/keys/%s.pk" % info.key_id: info.device_path.read_bytes()}
    assert list(keys.trusted_keys(state)) == [bytes.fromhex(info.key_id)]


def test_keys_init_never_replaces_the_fleet_key(state):
    info = keys.init_keys(state)
    before = info.private_path.read_bytes()
    with pytest.raises(keys.KeysError, match="already exists") as e:
        keys.init_keys(state)
    assert "strand every device" in e.value.hint
    assert info.private_path.read_bytes() == before


def test_device_key_file_is_strictly_parsed():
    good = keys.device_key_file(kit.signing_key().public_key())
    for bad in (b"", good[:17], b"XPK1" + good[4:], good + b"\0", good[:-1]):
        with pytest.raises(keys.KeysError):
            keys.parse_device_key_file(bad)


def test_missing_key_says_how_to_make_one(state):
    with pytest.raises(keys.KeysError, match="no OTA signing key") as e:
        keys.load_private_key(state)
    assert "warden keys init" in e.value.hint


# -- manifest and update file -------------------------------------------------------------------
def test_signed_update_round_trips_and_verifies():
    fw = kit.firmware("2.1.0")
    data = kit.signed(fw, kind="firmware", version="2.1.0", counter=7)
    m = image.verify(data, kit.trusted(), target=kit.TARGET, kind="firmware", installed_counter=6,
                     slot_size=espimage.SLOT_SIZE)
    assert (m.kind, m.version, m.counter, m.size, m.sha256) == ("firmware", "2.1.0", 7, len(fw),
                                                                hashlib.sha256(fw).digest())
    assert m.key_id == kit.key_id() and m.alg == "rsa3072-pss-sha256"
    mb, sig, payload = image.split(data)
    assert len(sig) == 384 and payload == fw and len(mb) <= image.MANIFEST_MAX
    assert image.inspect(data)["version"] == "2.1.0"


def _refused(data, reason, **kw):
    kw.setdefault("trusted", kit.trusted())
    trusted = kw.pop("trusted")
    with pytest.raises(UpdateError) as e:
        image.verify(data, trusted, **kw)
    assert reason in e.value.reason, e.value.reason
    return e.value.reason


def test_every_attack_is_refused_with_its_reason():
    fw = kit.firmware()
    good = kit.signed(fw, kind="firmware", counter=5)
    mb, sig, payload = image.split(good)
    # bad signature: one bit flipped
    bad_sig = bytearray(sig)
    bad_sig[10] ^= 1
    _refused(image.assemble(mb, bytes(bad_sig), payload), "bad signature")
    # signed by a key the devices do not trust
    _refused(kit.signed(fw, kind="firmware", key="rogue"), "unknown signing key " + kit.key_id("rogue").hex())
    # manifest altered after signing (the counter raised, the size, the target)
    for field, value in ((6, struct.pack(">I", 99)), (4, b"esp32/wardex")):
        altered = bytearray(mb)
        i = 4
        while altered[i] != field:
            i += 2 + altered[i + 1]
        altered[i + 2:i + 2 + len(value)] = value
        _refused(image.assemble(bytes(altered), sig, payload), "bad signature: the manifest was altered")
    # payload altered, cut short, too long
    alt = bytearray(payload)
    alt[5000] ^= 0xFF
    _refused(image.assemble(mb, sig, bytes(alt)), "payload altered")
    _refused(image.assemble(mb, sig, payload[:-1]), "payload short: %d of %d bytes" % (len(fw) - 1, len(fw)))
    _refused(image.assemble(mb, sig, payload + b"\0"), "payload too long")
    # too large for the slot, wrong target, wrong kind, replay and downgrade
    _refused(good, "too large for the slot", slot_size=len(fw) - 1)
    _refused(good, "wrong target: the update is for 'esp32/warden', this device is 'esp32/other'",
             target="esp32/other")
    _refused(good, "wrong kind: the update is 'firmware', expected 'app'", kind="app")
    _refused(good, "counter 5 is not newer than the installed 5 (replay)", installed_counter=5)
    _refused(good, "downgrade: counter 5 is lower than the installed 9", installed_counter=9)
    # a firmware image with a broken ESP32 header, signed anyway
    broken = bytearray(fw)
    broken[0] = 0xE8
    _refused(kit.signed(bytes(broken), kind="firmware", check=False), "broken ESP32 image: invalid magic byte")
    # unsupported algorithm (signed, so only the name check can refuse it)
    m2 = kit.manifest(kind="firmware", size=len(fw), sha=hashlib.sha256(fw).digest(), alg="ed25519")
    _refused(image.assemble(m2, image.sign_raw(m2, kit.signing_key()), fw), "unsupported algorithm 'ed25519'")


def test_malformed_and_oversized_manifests_are_refused_before_any_crypto():
    f = kit.good_fields()
    cases = {
        "no WMF1 header": kit.tlv(*f, magic=b"XMF1"),
        "ends before field 8": kit.tlv(*f[:7]),
        "field 3 where 2 belongs": kit.tlv(f[0], f[2], f[1], *f[3:]),
        "field 2 where 3 belongs": kit.tlv(*f[:2], f[1], *f[2:]),   # a repeated field
        "field 9 where 1 belongs": kit.tlv((9, b"x"), *f),            # an unknown field
        "bytes after the last field": kit.tlv(*f) + b"\x09\x00",
        "field 2 is 7 bytes, not 8": kit.tlv(f[0], (2, b"1234567"), *f[2:]),
        "field 6 is 8 bytes, not 4": kit.tlv(*f[:5], (6, bytes(8)), *f[6:]),
        "field 8 is 31 bytes, not 32": kit.tlv(*f[:7], (8, bytes(31))),
        "bad target": kit.tlv(*f[:3], (4, b"ESP32 WARDEN"), *f[4:]),
        "bad version": kit.tlv(*f[:4], (5, b"1 0"), *f[5:]),
        "not ASCII": kit.tlv(*f[:4], (5, "\u00e9".encode()), *f[5:]),
    }
    for why, m in cases.items():
        with pytest.raises(UpdateError) as e:
            image.Manifest.decode(m)
        assert e.value.reason.startswith("manifest malformed: ") and why in e.value.reason, (why, e.value.reason)
        # framed in an update file, even with a valid signature over the bad bytes, still refused
        _refused(image.assemble(m, image.sign_raw(m, kit.signing_key()), b"x" * 10), "manifest malformed")
    big = kit.tlv(*f[:4], (5, b"v" * 32), *f[5:]) + b"\0" * 600
    with pytest.raises(UpdateError, match="manifest oversized: "):
        image.Manifest.decode(big)
    with pytest.raises(UpdateError, match="manifest oversized"):
        image.split(image.UPDATE_MAGIC + struct.pack(">HH", 600, 384) + b"\0" * 1000)
    for bad in (b"", b"WUP0" + b"\0" * 20, image.UPDATE_MAGIC + struct.pack(">HH", 100, 384) + b"\0" * 50):
        with pytest.raises(UpdateError):
            image.split(bad)


def test_signing_refuses_bad_fields_and_broken_payloads():
    k = kit.signing_key()
    with pytest.raises(UpdateError, match="broken ESP32 image"):
        image.sign(b"\xe9" + b"\0" * 100, "firmware", "1", 1, kit.TARGET, k)
    with pytest.raises(UpdateError, match="malformed app bundle"):
        image.sign(b"not a bundle", "app", "1", 1, kit.TARGET, k)
    bundle = image.pack_bundle({"/firmware/a.mpy": b"x"})
    for kw, msg in (({"counter": 0}, "counter 0"), ({"counter": 2 ** 32}, "counter"),
                    ({"version": "a b"}, "version"), ({"version": "x" * 33}, "version"),
                    ({"target": "Esp32"}, "target"), ({"kind": "bootloader"}, "wrong kind")):
        args = {"kind": "app", "version": "1", "counter": 1, "target": kit.TARGET}
        args.update(kw)
        with pytest.raises(UpdateError, match=msg):
            image.sign(bundle, args["kind"], args["version"], args["counter"], args["target"], k)


# -- app bundles --------------------------------------------------------------------------------
def test_bundle_packs_only_the_app_and_unpacks_strictly():
    files = {"/firmware/app.mpy": b"A" * 100, "/lib/mqtt.mpy": b"M", "/boot.py": b"no", "/main.py": b"no",
             "/firmware/hal/unix.mpy": b"U"}
    b = image.pack_bundle(files)
    assert image.unpack_bundle(b) == {"firmware/app.mpy": b"A" * 100, "lib/mqtt.mpy": b"M",
                                      "firmware/hal/unix.mpy": b"U"}
    entry = lambda p, d: bytes([len(p)]) + p + struct.pack(">I", len(d)) + d  # noqa: E731
    hostile = {
        "no WAB1 header": b"XAB1" + entry(b"firmware/a", b"x") + b"\0",
        "ends without its end byte": b"WAB1" + entry(b"firmware/a", b"x"),
        "runs past the end": b"WAB1" + bytes([10]) + b"firmware/a" + struct.pack(">I", 99) + b"x\0",
        "appears twice": b"WAB1" + entry(b"firmware/a", b"x") + entry(b"firmware/a", b"y") + b"\0",
        "bytes after the end": b"WAB1" + entry(b"firmware/a", b"x") + b"\0junk",
        "not under firmware/ or lib/": b"WAB1" + entry(b"identity/key.der", b"x") + b"\0",
        "bad component '..'": b"WAB1" + entry(b"firmware/../identity/key.der", b"x") + b"\0",
        "bad component ''": b"WAB1" + entry(b"firmware//a", b"x") + b"\0",
        "no files": b"WAB1\0",
    }
    for why, data in hostile.items():
        with pytest.raises(UpdateError) as e:
            image.unpack_bundle(data)
        assert why in e.value.reason, (why, e.value.reason)
    with pytest.raises(UpdateError, match="empty"):
        image.pack_bundle({"/boot.py": b"x"})


def test_build_bundle_holds_the_compiled_app():
    files = image.unpack_bundle(image.build_bundle())
    assert "firmware/app.mpy" in files and "lib/rsapss.mpy" in files and "firmware/ota.mpy" in files
    assert all(p.endswith(".mpy") for p in files)
    assert all(v[:1] == b"M" for v in files.values())  # .mpy header


# -- CLI ----------------------------------------------------------------------------------------
@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.delenv("WARDEN_STATE", raising=False)

    def invoke(*args):
        return CliRunner().invoke(main, ["--state", str(tmp_path / "st"), *args])

    return invoke


def test_cli_keys_sign_inspect(run, tmp_path):
    r = run("sign", str(tmp_path / "x"), "--kind", "app", "--version", "1", "--counter", "1")
    assert r.exit_code == 1 and "error: cannot read" in r.output and "Traceback" not in r.output
    r = run("keys", "init")
    assert r.exit_code == 0, r.output
    assert "key id" in r.output and "/keys/" in r.output
    r = run("keys", "init")
    assert r.exit_code == 1 and "already exists" in r.output and "Traceback" not in r.output
    assert run("keys", "show").exit_code == 0
    fw = tmp_path / "micropython.bin"
    fw.write_bytes(kit.firmware("3.0.0"))
    r = run("sign", str(fw), "--kind", "firmware", "--version", "3.0.0", "--counter", "4")
    assert r.exit_code == 0, r.output
    out = tmp_path / "micropython.bin.wup"
    m = image.verify(out.read_bytes(), keys.trusted_keys(State(tmp_path / "st")), target="esp32/warden")
    assert (m.kind, m.version, m.counter) == ("firmware", "3.0.0", 4)
    r = run("ota", "inspect", str(out))
    assert r.exit_code == 0 and "valid" in r.output and "3.0.0" in r.output, r.output
    r = run("ota", "inspect", str(out), "--target", "esp32/other")
    assert r.exit_code == 1 and "error: wrong target" in r.output
    # the wrong key: a file signed by another fleet is refused by inspect
    other = tmp_path / "other.wup"
    other.write_bytes(kit.signed(kit.firmware(), kind="firmware", key="rogue"))
    r = run("ota", "inspect", str(other))
    assert r.exit_code == 1 and "error: unknown signing key" in r.output
    # a broken image is refused at signing time, with the reason
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00" * 100)
    r = run("sign", str(bad), "--kind", "firmware", "--version", "1", "--counter", "5")
    assert r.exit_code == 1 and "error: broken ESP32 image: invalid magic byte 0x00" in r.output
    r = run("sign", str(fw), "--kind", "firmware", "--version", "1", "--counter", "0")
    assert r.exit_code == 1 and "error: counter 0" in r.output


def test_cli_build_app_bundle_then_sign(run, tmp_path):
    assert run("keys", "init").exit_code == 0
    bundle = tmp_path / "app.bundle"
    r = run("build", "app", "--out", str(tmp_path / "app"), "--bundle", str(bundle))
    assert r.exit_code == 0, r.output
    assert "firmware/app.mpy" in image.unpack_bundle(bundle.read_bytes())
    r = run("sign", str(bundle), "--kind", "app", "--version", "0.2.0", "--counter", "2",
            "--out", str(tmp_path / "app.wup"))
    assert r.exit_code == 0, r.output
    r = run("ota", "inspect", str(tmp_path / "app.wup"), "--json")
    assert r.exit_code == 0 and '"kind": "app"' in r.output


def test_an_encrypted_signing_key_signs_only_with_its_passphrase(state, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from warden.cli import main

    monkeypatch.delenv(keys.PASSPHRASE_ENV, raising=False)
    info = keys.init_keys(state, "correct horse battery")
    raw = info.private_path.read_bytes()
    with pytest.raises(TypeError):                       # unreadable without it, as stored
        serialization.load_der_private_key(raw, None)
    assert keys.is_encrypted(state) and keys.info(state).key_id == info.key_id   # public side: no passphrase
    with pytest.raises(keys.KeysError, match="encrypted and no passphrase") as e:
        keys.load_private_key(state)                     # no terminal, no variable: a clear error
    assert keys.PASSPHRASE_ENV in e.value.hint
    with pytest.raises(keys.KeysError, match="wrong passphrase"):
        keys.load_private_key(state, "wrong horse battery")
    assert keys.load_private_key(state, "correct horse battery").key_size == 3072
    # the CLI signs with the variable set (CI), and the key file is unchanged by signing
    bundle = tmp_path / "b.bin"
    bundle.write_bytes(image.build_bundle())
    run = CliRunner().invoke(main, ["--state", str(state.root), "sign", str(bundle), "--kind", "app",
                                    "--version", "1.0.0", "--counter", "3"],
                             env={keys.PASSPHRASE_ENV: "correct horse battery"})
    assert run.exit_code == 0, run.output
    assert info.private_path.read_bytes() == raw
    files = {p.name for p in info.private_path.parent.rglob("*") if p.is_file()}
    assert files == {"ota-signing.key.der", "ota-signing.pub.der", info.key_id + ".pk"}
    bad = CliRunner().invoke(main, ["--state", str(state.root), "sign", str(bundle), "--kind", "app",
                                    "--version", "1.0.0", "--counter", "4"], env={keys.PASSPHRASE_ENV: "nope nope"})
    assert bad.exit_code == 1 and "wrong passphrase" in bad.output and "Traceback" not in bad.output


def test_keys_encrypt_protects_an_existing_key(state, monkeypatch):
    info = keys.init_keys(state)
    monkeypatch.setenv(keys.NEW_PASSPHRASE_ENV, "a new passphrase")
    from click.testing import CliRunner

    from warden.cli import main
    run = CliRunner().invoke(main, ["--state", str(state.root), "keys", "encrypt"])
    assert run.exit_code == 0, run.output
    assert keys.is_encrypted(state)
    assert keys.key_id(keys.load_private_key(state, "a new passphrase").public_key()).hex() == info.key_id


def test_during_a_rotation_a_release_can_be_signed_by_either_key_and_not_by_a_revoked_one(state, tmp_path):
    old = keys.init_keys(state).key_id
    new, update = keys.rotate(state)
    assert keys.parse_key_set(image.split(update.read_bytes())[2])          # the whole trusted set
    assert set(k.hex() for k in keys.trusted_keys(state)) == {old, new.key_id}
    bundle = tmp_path / "b.bin"
    bundle.write_bytes(image.build_bundle())
    for kid in (None, old):                     # the new (current) key, and the old one with --key
        run = CliRunner().invoke(main, ["--state", str(state.root), "sign", str(bundle), "--kind", "app",
                                        "--version", "1.0.0", "--counter", "5", "--out", str(tmp_path / "o.wup")]
                                 + (["--key", kid] if kid else []))
        assert run.exit_code == 0, run.output
        m = image.verify((tmp_path / "o.wup").read_bytes(), keys.trusted_keys(state))
        assert m.key_id.hex() == (kid or new.key_id)
    with pytest.raises(keys.KeysError, match="current signing key"):
        keys.revoke(state, new.key_id)
    keys.revoke(state, old)
    run = CliRunner().invoke(main, ["--state", str(state.root), "sign", str(bundle), "--kind", "app",
                                    "--version", "1.0.0", "--counter", "6", "--key", old])
    assert run.exit_code == 1 and "revoked" in run.output
    assert set(k.hex() for k in keys.trusted_keys(state)) == {new.key_id}
