"""The `ota_vectors` fixture for device tests: a template twin flash and signed updates (good ones
and one per attack), made once per session on the host with `cryptography`."""
import hashlib
import json
import struct

import pytest

from warden.board import build
from warden.ota import image

from . import otakit as kit

INSTALLED = {"app": [3, "1.0.0"], "firmware": [3, "1.0.0"]}
APP_MAX = 262144  # firmware/ota.py


class _Ctx(dict):
    def devtest_ctx(self):
        return dict(self)


def _alter_manifest_field(update, tag, value):
    mb, sig, payload = image.split(update)
    m = bytearray(mb)
    i = 4
    while m[i] != tag:
        i += 2 + m[i + 1]
    m[i + 2:i + 2 + len(value)] = value
    return image.assemble(bytes(m), sig, payload)


def vectors(app_files):
    """{name: update file bytes}: the good updates and every attack."""
    bundle = image.pack_bundle(app_files)
    fw = kit.firmware("2.0.0", 200 * 1024)
    app = kit.signed(bundle, "app", "2.0.0", counter=4)
    firmware = kit.signed(fw, "firmware", "2.0.0", counter=4)
    mb, sig, payload = image.split(firmware)
    out = {"app": app, "firmware": firmware}
    out["app_v3"] = kit.signed(bundle, "app", "3.0.0", counter=5)
    out["firmware_v3"] = kit.signed(kit.firmware("3.0.0", 150 * 1024), "firmware", "3.0.0", counter=5)
    bad = bytearray(sig)
    bad[200] ^= 0x01
    out["bad_signature"] = image.assemble(mb, bytes(bad), payload)
    out["unknown_key"] = kit.signed(fw, "firmware", "2.0.0", counter=4, key="rogue")
    out["manifest_altered"] = _alter_manifest_field(firmware, 6, struct.pack(">I", 40))
    alt = bytearray(payload)
    alt[150000] ^= 0x40
    out["payload_altered"] = image.assemble(mb, sig, bytes(alt))
    out["payload_long"] = image.assemble(mb, sig, payload + b"\xe9" * 100)
    big = kit.manifest("firmware", counter=4, size=0x180001)
    out["too_large_firmware"] = image.assemble(big, image.sign_raw(big, kit.signing_key()), b"")
    big = kit.manifest("app", counter=4, size=APP_MAX + 1)
    out["too_large_app"] = image.assemble(big, image.sign_raw(big, kit.signing_key()), b"")
    out["wrong_target"] = kit.signed(fw, "firmware", "2.0.0", counter=4, target="esp32/other")
    out["counter_equal"] = kit.signed(fw, "firmware", "1.9.0", counter=3)
    out["counter_lower"] = kit.signed(fw, "firmware", "0.9.0", counter=2)  # an older genuine release
    m = kit.tlv(*kit.good_fields("firmware", 10, 4)[:7])  # field 8 missing, signed anyway
    out["malformed_manifest"] = image.assemble(m, image.sign_raw(m, kit.signing_key()), b"")
    m = kit.tlv(*kit.good_fields("firmware", 10, 4)) + b"\x00" * 600
    out["oversized_manifest"] = image.assemble(m, image.sign_raw(m, kit.signing_key()), b"")
    m = kit.manifest("firmware", counter=4, alg="rsa2048-pkcs1-sha1")
    out["unsupported_alg"] = image.assemble(m, image.sign_raw(m, kit.signing_key()), b"")
    m = kit.manifest("bootloader", counter=4, size=len(fw), sha=hashlib.sha256(fw).digest())
    out["unknown_kind"] = image.assemble(m, image.sign_raw(m, kit.signing_key()), fw)
    hdr = bytearray(fw)
    hdr[0] = 0x00
    out["broken_header"] = kit.signed(bytes(hdr), "firmware", "2.0.0", counter=4, check=False)
    cs = bytearray(fw)
    cs[-33] ^= 0x01  # the checksum byte (before the appended SHA-256)
    out["broken_checksum"] = kit.signed(bytes(cs), "firmware", "2.0.0", counter=4, check=False)
    evil = b"WAB1" + bytes([21]) + b"firmware/../keys/x.pk" + struct.pack(">I", 1) + b"x" + b"\0"
    out["malformed_bundle"] = kit.signed(evil, "app", "2.0.0", counter=4, check=False)
    return out


@pytest.fixture(scope="session")
def ota_vectors(tmp_path_factory):
    d = tmp_path_factory.mktemp("ota")
    files = build.build_app(d / "app")
    flash = kit.make_flash(d / "template.bin", {"/state/ota.json": json.dumps(INSTALLED).encode()})
    ctx = _Ctx(flash=str(flash), twin=str(build.build_twin_rom()), installed=INSTALLED, app_max=APP_MAX)
    for name, data in vectors(files).items():
        p = d / (name + ".wup")
        p.write_bytes(data)
        ctx[name] = str(p)
    return ctx
