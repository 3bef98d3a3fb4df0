# Device tests: an identity provisioned for AWS IoT Core (firmware/identity.py): ca.der holding
# Amazon Root CA 1-4 back to back loads every root into the TLS context's trust store; a ca.der
# cut short is refused at boot.
# devtest: needs=aws_identity
import devtest
from devtest import raises

from firmware import identity

C = devtest.ctx()["aws_identity"]


def use(ca="ca.der"):
    identity.CERT, identity.KEY, identity.CA = C["cert.der"], C["key.der"], C[ca]


def test_amazon_roots_load_into_the_tls_context():
    use()
    ident = identity.load("thing-1", C["now"])
    import tls
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ident.load_into(ctx)
    assert ctx.verify_mode == tls.CERT_REQUIRED


def test_roots_cut_short_are_refused():
    use("ca_cut.der")
    e = raises(identity.IdentityError, identity.load, "thing-1", C["now"])
    assert "not valid DER" in str(e), e
