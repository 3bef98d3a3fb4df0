"""Thing names follow AWS IoT rules; role principals (with a dot) can never be thing names."""
import pytest

from warden.fleet.names import (InvalidName, is_valid_thing, parse_principal, principal_cn, validate_app,
                                validate_thing)


@pytest.mark.parametrize("name", ["a", "twin-001", "Sensor_7", "aa:bb:cc:dd:ee:ff", "x" * 64, "-", "0"])
def test_valid_thing_names(name):
    assert validate_thing(name) == name


@pytest.mark.parametrize("name, fragment", [
    ("", "empty"),
    ("x" * 65, "65 characters"),
    ("x" * 128, "128 characters"),
    ("$SYS", "starts with '$'"),
    ("a/b", "'/'"),
    ("a+b", "wildcard"),
    ("a#", "wildcard"),
    ("operator.default", "reserved for role principals"),
    ("has space", "spaces"),
    ("tab\there", "'\\t'"),
    ("new\nline", "'\\n'"),
    ("dev\u00e9", "'\u00e9'"),
    ("..", "'.'"),
    ("a%u", "'%'"),
])
def test_invalid_thing_names_say_what_is_wrong(name, fragment):
    with pytest.raises(ValueError) as e:
        validate_thing(name)
    assert fragment in str(e.value)
    assert "1-64" in e.value.hint
    assert not is_valid_thing(name)


def test_invalid_name_is_a_value_error_and_not_a_string_is_refused():
    with pytest.raises(InvalidName):
        validate_thing(None)
    assert issubclass(InvalidName, ValueError)


def test_role_principals_cannot_be_thing_names():
    cn = principal_cn("operator")
    assert cn == "operator.default"
    assert parse_principal(cn) == ("operator", "default")
    assert parse_principal("technician.alice") == ("technician", "alice")
    assert not is_valid_thing(cn)
    assert parse_principal("twin-001") is None
    assert parse_principal("a.b.c") is None
    with pytest.raises(ValueError):
        principal_cn("Operator")
    with pytest.raises(ValueError):
        principal_cn("operator", "a.b")


def test_app_names():
    assert validate_app("warden") == "warden"
    for bad in ("", "a/b", "Warden", "x" * 33, "-x", "a b", "a\nuser evil"):
        with pytest.raises(ValueError):
            validate_app(bad)
