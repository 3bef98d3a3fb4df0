"""warden.aws.client's translation of AWS's errors into one line and its fix (the moto tests in
tests/integration/test_aws.py show no credentials, unknown credentials and throttling over HTTP;
moto cannot refuse an IoT action for want of a permission, so that answer is checked here)."""
from warden.aws.client import Aws, AwsConflict, AwsError, AwsNotFound


def client():
    return Aws("eu-west-1", endpoint_url="http://127.0.0.1:9")    # never called


def test_a_refused_action_names_the_iam_action_to_grant():
    e = client()._translate("iot:RegisterCertificateWithoutCA", "AccessDeniedException",
                            "User: arn:aws:iam::1:user/x is not authorized", 403)
    assert str(e) == "AWS refused iot:RegisterCertificateWithoutCA: User: arn:aws:iam::1:user/x is not authorized"
    assert "permission iot:RegisterCertificateWithoutCA" in e.hint and "docs/aws.md" in e.hint


def test_an_xml_error_body_is_read_for_its_code():
    body = ('<?xml version="1.0"?><ErrorResponse><Errors><Error><Code>AccessDenied</Code>'
            '<Message>not authorized to perform: iot:CreateThing</Message></Error></Errors></ErrorResponse>')
    e = client()._translate("iot:CreateThing", "403", body, 403)
    assert str(e) == "AWS refused iot:CreateThing: not authorized to perform: iot:CreateThing"


def test_other_answers():
    c = client()
    e = c._translate("iot:CreatePolicy", "ResourceAlreadyExistsException", "name exists", 409)
    assert isinstance(e, AwsConflict) and "already used" in str(e) and e.hint
    assert isinstance(c._translate("iot:GetPolicy", "ResourceNotFoundException", "gone", 404), AwsNotFound)
    e = c._translate("iot:CreateThing", "LimitExceededException", "too many", 400)
    assert "quota" in str(e) and "Service Quotas" in e.hint
    e = c._translate("iot:ListThings", "ThrottlingException", "Rate exceeded", 429)
    assert "kept throttling iot:ListThings after 8 tries" in str(e) and "warden aws sync" in e.hint
    e = c._translate("iot:ListThings", "ExpiredTokenException", "expired", 403)
    assert "does not accept these credentials" in str(e)
    e = c._translate("iot:ListThings", "SomethingNew", "odd", 400)
    assert type(e) is AwsError and str(e) == "iot:ListThings failed: SomethingNew: odd"
