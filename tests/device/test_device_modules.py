"""Device tests: MicroPython test functions in tests/device/dev_*.py, each run under the real `micropython`.

Every `def test_*():` in a dev_*.py file becomes one pytest item here, run in its own
`micropython -X heapsize=...` process over the app compiled by mpy-cross (the
`app_build` fixture), so a failure reads like any other test. A module may declare
`# devtest: heap=128k` and `# devtest: needs=broker,...` (host fixtures whose
`devtest_ctx()` is handed to the device as JSON; see devtest.py).
"""
import json
import re
from pathlib import Path

import pytest

from support.devrun import run_mp

HERE = Path(__file__).resolve().parent


def _discover():
    out = []
    for path in sorted(HERE.glob("dev_*.py")):
        src = path.read_text()
        opts = dict(re.findall(r"^# devtest: (\w+)=(\S+)", src, re.M))
        for name in re.findall(r"^def (test_\w+)\(\):", src, re.M):
            out.append(pytest.param(path, name, opts, id="%s::%s" % (path.stem, name)))
    return out


@pytest.mark.parametrize("path,name,opts", _discover())
def test_on_micropython(path, name, opts, app_build, tmp_path, request):
    ctx = {}
    for need in filter(None, opts.get("needs", "").split(",")):
        ctx[need] = request.getfixturevalue(need).devtest_ctx()
    ctx_path = tmp_path / "ctx.json"
    ctx_path.write_text(json.dumps(ctx))
    env = {"MICROPYPATH": ":".join([".frozen", str(HERE), str(app_build / "lib"), str(app_build)]),
           "WARDEN_DEVTEST_TMP": str(tmp_path), "WARDEN_DEVTEST_CTX": str(ctx_path)}
    r = run_mp(script=HERE / "_runner.py", args=[path.stem, name], heap=opts.get("heap", "64k"), env=env,
               timeout=120)
    assert r.returncode == 0 and "DEVTEST-PASS" in r.stdout, (
        "device test failed under micropython (exit %d)\n--- stdout\n%s--- stderr\n%s"
        % (r.returncode, r.stdout, r.stderr))
