# Device tests for lib/der.py and firmware/identity.py: the identity checks at boot.
# devtest: needs=identity_files
import os

import der
import devtest
from devtest import raises

from firmware import identity

C = devtest.ctx()["identity_files"]
NOW = C["now"]


def use(cert="cert.der", key="key.der", ca="ca.der"):
    identity.CERT = C[cert] if cert else "/nonexistent/cert.der"
    identity.KEY = C[key] if key else "/nonexistent/key.der"
    identity.CA = C[ca] if ca else "/nonexistent/ca.der"


def test_good_identity_loads_and_builds_a_verifying_context():
    use()
    ident = identity.load("thing-1", NOW)
    assert ident.thing == "thing-1"
    assert 363 <= ident.days_left(NOW) <= 365
    import tls
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ident.load_into(ctx)
    assert ctx.verify_mode == tls.CERT_REQUIRED


def test_missing_files_are_named():
    for missing, word in (("cert", "certificate"), ("key", "private key"), ("ca", "fleet CA")):
        use(**{missing: None})
        e = raises(identity.IdentityError, identity.load, "thing-1", NOW)
        assert word in str(e) and "missing" in str(e), e


def test_key_of_another_device_is_refused():
    use(key="other_key.der")
    e = raises(identity.IdentityError, identity.load, "thing-1", NOW)
    assert "does not belong" in str(e), e


def test_pkcs8_key_without_public_part_is_refused_clearly():
    use(key="key_pkcs8.der")
    e = raises(identity.IdentityError, identity.load, "thing-1", NOW)
    assert "private key" in str(e), e


def test_wrong_thing_name_is_refused():
    use()
    e = raises(identity.IdentityError, identity.load, "thing-2", NOW)
    assert "thing-1" in str(e) and "thing-2" in str(e), e


def test_expired_and_not_yet_valid_are_refused():
    use(cert="expired.der")
    assert "expired" in str(raises(identity.IdentityError, identity.load, "thing-1", NOW))
    use(cert="future.der")
    assert "not valid yet" in str(raises(identity.IdentityError, identity.load, "thing-1", NOW))


def test_unset_clock_is_refused():
    use()
    e = raises(identity.IdentityError, identity.load, "thing-1", 3600)
    assert "clock" in str(e), e


def test_expiry_soon_is_visible():
    use(cert="soon.der")
    ident = identity.load("thing-1", NOW)
    assert ident.days_left(NOW) < identity.EXPIRY_WARNING_DAYS


def test_rsa_identity_is_accepted():
    use(cert="rsa_cert.der", key="rsa_key.der")
    assert identity.load("thing-1", NOW).thing == "thing-1"


def test_generalized_time_after_2049():
    c = der.Certificate(devtest.read(C["gt2050.der"]))
    assert c.not_after == der.to_unix((2051, 3, 4, 5, 6, 7)) == 2561519167  # from CPython datetime


def test_every_truncation_of_a_certificate_is_a_clean_error():
    good = devtest.read(C["cert.der"])
    for n in range(0, len(good), 7):
        raises(ValueError, der.Certificate, good[:n])


def test_garbage_certificate_file_is_an_identity_error():
    p = devtest.tmp + "/junk.der"
    devtest.write(p, b"\x30\x82\xff\xff" + os.urandom(40))
    identity.CERT = p
    identity.KEY = C["key.der"]
    identity.CA = C["ca.der"]
    e = raises(identity.IdentityError, identity.load, "thing-1", NOW)
    assert "not valid DER" in str(e), e
