"""The `aws_identity` fixture: a device identity as `warden` provisions one for AWS IoT Core,
as files for a device test (`# devtest: needs=aws_identity`): the device's certificate and key,
ca.der = Amazon Root CA 1-4 back to back, as DER from the certifi bundle (warden.aws.rootca), and
the same cut short."""
import pytest

from support import certfactory as cf


class _Ctx(dict):
    def devtest_ctx(self):
        return dict(self)


@pytest.fixture
def aws_identity(tmp_path):
    from warden.aws import rootca

    roots = list(rootca.amazon_roots().values())
    ca_key = cf.ec_key()
    k = cf.ec_key()
    files = {"cert.der": cf.der(cf.make_cert("thing-1", k, ca_key, "Test CA")), "key.der": cf.key_der(k),
             "ca.der": b"".join(roots), "ca_cut.der": b"".join(roots)[:-10]}
    out = _Ctx(now=int(cf.NOW.timestamp()))
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = str(tmp_path / name)
    return out
