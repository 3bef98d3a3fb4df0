"""AWS IoT Core's limits against what Warden sends there (docs/aws.md, 'What a device respects'),
the Amazon root CAs a device gets, and the rendered policy's answer to a device's retained status.
The device's own topic, client-id and keepalive checks run under micropython (tests/device/dev_aws.py)."""
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from warden.aws import rootca
from warden.ota import push
from warden.policy import aws as awspolicy
from warden.policy.model import default_policy

ROOT = Path(__file__).resolve().parents[2]
AWS_MAX_MESSAGE = 128 * 1024          # bytes of payload per message
AWS_PUBLISHES_PER_S = 100             # per connection
AWS_BYTES_PER_S = 512 * 1024          # per connection
AWS_INFLIGHT = 100                    # unacknowledged QoS 1 publishes per connection


def test_the_amazon_roots_come_from_the_bundle_as_der_and_are_self_signed_cas():
    roots = rootca.amazon_roots()
    assert list(roots) == ["Amazon Root CA 1", "Amazon Root CA 2", "Amazon Root CA 3", "Amazon Root CA 4"]
    kinds = []
    for name, der in roots.items():
        cert = x509.load_der_x509_certificate(der)          # DER: the device's TLS parses only that
        assert cert.subject == cert.issuer and cert.subject.rfc4514_string() == f"CN={name},O=Amazon,C=US"
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        cert.verify_directly_issued_by(cert)
        kinds.append(type(cert.public_key()))
    assert issubclass(kinds[0], rsa.RSAPublicKey) and issubclass(kinds[2], ec.EllipticCurvePublicKey)


def test_ota_messages_fit_aws_message_size_and_rate_limits():
    src = (ROOT / "firmware/otalink.py").read_text()
    head_max = eval(re.search(r"^_HEAD_MAX = (.+)$", src, re.M).group(1))      # 8 + 512 + 384
    assert 1 + head_max <= AWS_MAX_MESSAGE
    biggest = 1 + 4 + 8192                    # b"C", offset, the largest chunk push accepts
    assert biggest <= AWS_MAX_MESSAGE
    # at the default chunk, even AWS's publish rate limit keeps a transfer under its byte limit
    assert (1 + 4 + push.CHUNK) * AWS_PUBLISHES_PER_S <= AWS_BYTES_PER_S
    assert push.WINDOW <= AWS_INFLIGHT


def test_a_devices_retained_status_is_allowed_by_iot_retainpublish_only_on_its_own_topic():
    policy = default_policy()
    docs = awspolicy.render_aws(policy, "warden")
    ev = awspolicy.AwsEvaluator(docs)
    own = "dt/warden/dev-1/status"
    assert ev.allowed(policy, "dev-1", "retain_publish", own)
    assert not ev.allowed(policy, "dev-1", "retain_publish", "dt/warden/dev-2/status")
    assert ev.allowed(policy, "dev-1", "connect", "dev-1")
    assert not ev.allowed(policy, "dev-1", "connect", "dev-2")            # client id = thing name
    st = [s for s in docs["device"]["Statement"] if s["Sid"] == "Publish"][0]
    assert awspolicy.RETAIN_PUBLISH in st["Action"]
