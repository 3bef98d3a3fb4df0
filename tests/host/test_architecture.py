"""The device code's structure, read from its source (no device needed):

- no import cycle in firmware/ and lib/, except a cold part importing its hot half (the hot
  module loads the cold one for a call and unloads it; the cold one uses the hot one's names);
- code is unloaded through one mechanism, firmware/core.py's unload() (lib/ is a set of
  libraries usable without the firmware, with their own cold parts);
- every module starts by saying what it is for.
"""
import ast

from support.devrun import ROOT

# cold part -> the hot module that loads it for a call (and that it may import)
COLD_PARTS = {
    "mqttconn": "mqtt", "mqttsub": "mqtt", "mqttmsg": "mqtt",
    "logopen": "logstore", "logread": "logstore",
    "firmware.topiccheck": "firmware.topics",
    "firmware.hal.unixboot": "firmware.hal.unix", "firmware.hal.esp32boot": "firmware.hal.esp32",
    "firmware.ota_check": "firmware.ota", "firmware.ota_fw": "firmware.ota", "firmware.ota_app": "firmware.ota",
    "firmware.ota_keys": "firmware.ota",
}


def device_modules():
    mods = {}
    for p in sorted((ROOT / "firmware").rglob("*.py")):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name[:-len(".__init__")] if name.endswith(".__init__") else name] = p
    for p in sorted((ROOT / "lib").glob("*.py")):
        mods[p.stem] = p
    return mods


def import_graph(mods):
    edges = {m: set() for m in mods}
    for m, path in mods.items():
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Import):
                edges[m] |= {a.name for a in n.names if a.name in mods}
            elif isinstance(n, ast.ImportFrom) and n.module in mods:
                subs = {f"{n.module}.{a.name}" for a in n.names} & set(mods)
                # `from pkg import sub` imports the submodule; `from mod import name` the module
                edges[m] |= subs if subs and len(subs) == len(n.names) else {n.module} | subs
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_other_than_a_cold_part_importing_its_hot_half():
    edges = import_graph(device_modules())
    for cold, hot in COLD_PARTS.items():
        assert cold in edges and hot in edges, (cold, hot)    # the table names real modules
        edges[cold].discard(hot)
    assert cycles(edges) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    edges = import_graph(device_modules())
    edges["firmware.core"].add("firmware.device")     # as if core imported the session loop
    assert any("firmware.core" in c for c in cycles(edges))


def test_device_code_is_unloaded_only_through_core_unload():
    # slots.py is the exception: it runs from boot.py before the app's package exists and
    # must forget the factory package it came from (it cannot use the app's core.py).
    offenders = []
    for name, path in device_modules().items():
        if name.startswith("firmware") and name not in ("firmware.core", "firmware.slots"):
            src = path.read_text()
            if "sys.modules.pop" in src or "delattr(" in src:
                offenders.append(name)
    assert offenders == []


def test_every_module_starts_by_saying_what_it_is_for():
    silent = []
    for name, path in device_modules().items():
        text = path.read_text().lstrip()
        tree = ast.parse(text)
        if not (text.startswith("#") or ast.get_docstring(tree)) and text:
            silent.append(name)
    assert silent == []


def test_the_log_format_constants_agree_wherever_they_are_inlined():
    # MicroPython inlines `_NAME = const(n)`, so the log store's writer and its cold parts (and
    # the host's decoder) each keep their own copy of the record layout: one meaning, checked here.
    import re
    from warden.logs import format as host
    want = {"HLEN": host.HLEN, "SEGHDR": host.SEGHDR, "RH": host.RH, "OVER": host.OVER, "SKIP": host.SKIP}
    found = []
    for f in ("logstore.py", "logopen.py", "logread.py"):
        for name, n in re.findall(r"^_?([A-Z]+) = const\((\d+)\)", (ROOT / "lib" / f).read_text(), re.M):
            if name in want:
                found.append((f, name))
                assert int(n) == want[name], (f, name, n, want[name])
    assert len(found) >= 10, found    # the table above reads the real files
