"""Device code compiles with the real mpy-cross, and only what changed is recompiled."""
import shutil

import pytest

from warden.board import build


def test_every_device_source_compiles(tmp_path):
    files = build.build_app(tmp_path)
    sources = {rel for rel, _ in build.device_sources()}
    compiled = {k.lstrip("/") for k in files}
    for rel in sources:
        want = rel if rel in build.SOURCE_FILES else rel[:-3] + ".mpy"
        assert want in compiled, want
    for k, v in files.items():
        if k.endswith(".mpy"):
            assert v[:2] == b"M\x06", "%s is not a v6 .mpy" % k  # mpy-cross 1.29: .mpy v6.3


def test_second_build_recompiles_nothing(tmp_path):
    build.build_app(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.mpy")}
    build.build_app(tmp_path)
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.mpy")}


def test_a_syntax_error_names_the_file(tmp_path):
    root = tmp_path / "src"
    for d in ("firmware", "lib"):
        (root / d).mkdir(parents=True)
    for f in build.SOURCE_FILES:
        (root / f).write_text("pass\n")
    (root / "lib" / "broken.py").write_text("def f(:\n")
    with pytest.raises(build.BuildError, match="lib/broken.py"):
        build.build_app(tmp_path / "out", root=root)


def test_removed_sources_leave_the_build(tmp_path):
    root = tmp_path / "src"
    shutil.copytree(build.ROOT / "firmware", root / "firmware")
    shutil.copytree(build.ROOT / "lib", root / "lib")
    for f in build.SOURCE_FILES:
        shutil.copy(build.ROOT / f, root / f)
    out = tmp_path / "out"
    build.build_app(out, root=root)
    (root / "firmware" / "topics.py").unlink()
    files = build.build_app(out, root=root)
    assert "/firmware/topics.mpy" not in files and not (out / "firmware" / "topics.mpy").exists()
