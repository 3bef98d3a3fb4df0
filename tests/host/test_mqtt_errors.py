"""lib/mqtt.py raises its errors by number: the texts are the lines of one table, _MSGS in
lib/mqttmsg.py (loaded only to word an error), and the hot client and its cold parts name the
lines they raise with `_<class>_<NAME> = const(n)`. MicroPython inlines those constants, so each
module keeps its own; this test keeps them in step with the table."""
import re

from support.devrun import ROOT

FILES = ("mqtt.py", "mqttconn.py", "mqttsub.py")
CONST = re.compile(r"^_([VPTEC])_([A-Z_]+) = const\((\d+)\)", re.M)


def table():
    src = (ROOT / "lib" / "mqttmsg.py").read_text()
    body = re.search(r'_MSGS = """(.*?)"""', src, re.S).group(1)
    names = int(re.search(r"_NAMES = const\((\d+)\)", src).group(1))
    return body.split("\n"), names


def constants(files=FILES, text=None):
    out = []
    for f in files:
        src = text if text is not None else (ROOT / "lib" / f).read_text()
        out += [(f, cls, name, int(n)) for cls, name, n in CONST.findall(src)]
    return out


def problems(consts, lines, names):
    found = []
    seen = {}
    for f, cls, name, n in consts:
        if n >= names or lines[n][:1] != cls:
            found.append(f"{f}: _{cls}_{name} = {n} is line {lines[n] if n < len(lines) else '(none)'!r}")
        if seen.setdefault(f"{cls}_{name}", n) != n:
            found.append(f"{f}: _{cls}_{name} = {n}, elsewhere {seen[f'{cls}_{name}']}")
    # every message line is raised by some constant (the "-" lines are names: the CONNACK
    # refusals by return code, mqttconn's _REFUSED + code, and the packet types after _NAMES)
    unused = sorted(i for i in set(range(names)) - {n for *_, n in consts} if lines[i][:1] != "-")
    if unused:
        found.append(f"lines no module raises: {[lines[i] for i in unused]}")
    return found


def test_every_error_constant_names_its_line_of_the_one_table():
    lines, names = table()
    assert problems(constants(), lines, names) == []
    # the CONNACK refusal names follow the messages, then the 16 packet type names
    assert lines[names] == "-reserved(0)" and lines[names + 4] == "-PUBACK" and len(lines) == names + 16
    assert lines[34].startswith("C") and lines[35:40] == ["-unacceptable protocol version", "-identifier rejected",
                                                        "-server unavailable", "-bad user name or password",
                                                        "-not authorized"]


def test_a_constant_out_of_step_is_caught():
    lines, names = table()
    wrong = constants() + constants(["mqttsub.py"], "_P_QOS = const(6)\n_V_QOS = const(7)\n")
    found = problems(wrong, lines, names)
    assert any("_P_QOS = 6" in p for p in found) and any("_V_QOS = 7, elsewhere 6" in p for p in found), found
