"""warden flash / deploy on the host: images checked with the real esptool (offline), the command
lines a board would get, the filesystem budget, manifest.py and the mip package files."""
import ast
import json
import subprocess

import pytest
from click.testing import CliRunner

from warden.board import deploy, espimage, flash, flashimage, ports
from warden.cli import main
from warden.fleet import devices

ROOT = flash.flashimage.__file__ and __import__("pathlib").Path(__file__).resolve().parents[2]


def combined(app, *, table=None, boff=0x1000, chip_id=0):
    """A combined firmware.bin: bootloader at 0, partition table, app at the ota_0 offset."""
    boot = espimage.build_image("boot", segments=[(0x3FFF0000, bytes(4096)), (0x40078000, bytes(4096))],
                                chip_id=chip_id)
    img = bytearray(b"\xff" * (0x10000 - boff))
    img[:len(boot)] = boot
    t = 0x8000 - boff
    img[t:t + 0xC00] = table or flashimage.partition_table()
    return bytes(img) + app


@pytest.fixture
def images(tmp_path):
    def put(name, data):
        p = tmp_path / name
        p.write_bytes(data)
        return p
    return put


def test_app_image_goes_to_ota_0_after_erasing_otadata(images):
    p = images("micropython.bin", espimage.build_image("v1.29.0", 200 * 1024))
    info = flash.inspect_image(p)
    assert (info.kind, info.chip, info.offset, info.version) == ("app", "esp32", 0x10000, "v1.29.0")
    steps = flash.flash_plan("/dev/ttyUSB0", info, erase=False)
    assert [s.argv[3:] for s in steps] == [
        ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800", "erase-region", "0xd000", "0x2000"],
        ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800", "write-flash", "0x10000", str(p)]]
    with pytest.raises(flash.FlashError, match="no bootloader"):
        flash.flash_plan("/dev/ttyUSB0", info, erase=True)


def test_combined_image_is_written_at_0x1000_after_an_erase(images):
    p = images("firmware.bin", combined(espimage.build_image("v1.29.0", 300 * 1024)))
    info = flash.inspect_image(p)
    assert info.kind == "combined" and info.offset == 0x1000 and info.app_size < flash.SLOT_SIZE
    assert {x[0] for x in info.partitions} >= {"ota_0", "ota_1", "nvs", "otadata"}
    cmds = [s.argv[9:] for s in flash.flash_plan("/dev/ttyUSB0", info)]
    assert cmds == [["erase-flash"], ["write-flash", "0x1000", str(p)]]
    cmds = [s.argv[9:] for s in flash.flash_plan("/dev/ttyUSB0", info, erase=False)]
    assert cmds == [["erase-region", "0xd000", "0x2000"], ["write-flash", "0x1000", str(p)]]


def test_esptool_knows_every_command_we_build():
    """The pinned esptool (v5) accepts each hyphenated command: its own --help, offline."""
    for cmd in ("erase-flash", "erase-region", "write-flash", "read-flash", "image-info"):
        r = subprocess.run(flash.esptool_argv(cmd, "--help"), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (cmd, r.stderr)


@pytest.mark.parametrize("case,data,match", [
    ("too-big-app", lambda: espimage.build_image("v9", flash.SLOT_SIZE + 4096), "larger than the 1.5 MiB"),
    ("too-big-combined", lambda: combined(espimage.build_image("v9", flash.SLOT_SIZE + 4096)), "larger than the 1.5 MiB"),
    ("other-chip", lambda: espimage.build_image("v1", 64 * 1024, chip_id=9), "built for esp32s3, not esp32"),
    ("not-an-image", lambda: b":020000040000FA\n" * 100, "not an ESP32 firmware image"),
    ("damaged", lambda: bytes(b ^ 1 if i == 5000 else b for i, b in enumerate(espimage.build_image("v1", 64 * 1024))),
     "damaged|not a valid ESP32 image"),
    ("bootloader-only", lambda: espimage.build_image("b", segments=[(0x3FFF0000, bytes(4096))]), "not an application"),
    ("not-ota-layout", lambda: combined(espimage.build_image("v1", 64 * 1024), table=flashimage.partition_table((
        flashimage.Part("nvs", 1, 2, 0x9000, 0x6000), flashimage.Part("phy_init", 1, 1, 0xF000, 0x1000),
        flashimage.Part("factory", 0, 0, 0x10000, 0x1F0000), flashimage.Part("vfs", 1, 0x81, 0x200000, 0x200000)))),
     "not the OTA partition layout"),
])
def test_unfit_images_are_refused_before_the_board_is_touched(case, data, match, images):
    p = images(case + ".bin", data())
    with pytest.raises(flash.FlashError, match=match):
        flash.inspect_image(p)
    ran = []
    with pytest.raises(flash.FlashError):
        flash.flash("/dev/ttyUSB0", p, runner=ran.append)
    assert ran == []


def test_flash_cli_checks_then_runs_esptool(images, monkeypatch):
    ok = images("firmware.bin", combined(espimage.build_image("v1.29.0", 100 * 1024)))
    big = images("big.bin", espimage.build_image("v9", flash.SLOT_SIZE + 4096))
    r = CliRunner().invoke(main, ["flash", "--port", "/dev/ttyUSB0", "--firmware", str(ok), "--check-only"])
    assert r.exit_code == 0 and "combined image for esp32" in r.output, r.output
    ran = []
    monkeypatch.setattr(flash, "run_steps", lambda steps, runner=None, say=None: ran.extend(steps))
    r = CliRunner().invoke(main, ["flash", "--port", "/dev/ttyUSB0", "--firmware", str(big)])
    assert r.exit_code == 1 and "error:" in r.output and "1.5 MiB" in r.output and not ran
    # erasing wipes the board's identity, log and counters: a script must say --yes
    r = CliRunner().invoke(main, ["flash", "--port", "/dev/ttyUSB0", "--firmware", str(ok)])
    assert r.exit_code == 1 and "--yes" in r.output and not ran, r.output
    r = CliRunner().invoke(main, ["flash", "--port", "/dev/ttyUSB0", "--firmware", str(ok), "--yes"])
    assert r.exit_code == 0, r.output
    assert [s.argv[-3:] for s in ran] == [["--baud", "460800", "erase-flash"], ["write-flash", "0x1000", str(ok)]]


# -- deploy ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def thing(pki_state):
    devices.add_device(pki_state, "board-host")
    return "board-host"


def test_deploy_files_are_the_app_identity_log_key_and_a_board_config(pki_state, thing, app_build):
    cfg = deploy.board_config(pki_state, thing, wifi_ssid="lab", wifi_password="pw", broker_host="10.0.0.5")
    files = deploy.deploy_files(pki_state, thing, cfg)
    folder = pki_state.device_dir(thing)
    assert files["/identity/cert.der"] == (folder / "cert.der").read_bytes()
    assert files["/identity/key.der"] == (folder / "key.der").read_bytes()
    assert files["/identity/ca.der"] == (pki_state.pki_dir / "ca.der").read_bytes()
    assert len(files[deploy.LOG_KEY_FILE]) == 32
    assert "/firmware/app.mpy" in files and "/lib/mqtt.mpy" in files and "/main.py" in files
    c = json.loads(files["/config.json"])
    assert c["thing"] == thing and c["broker"]["host"] == "10.0.0.5" and c["wifi"] == {"ssid": "lab", "password": "pw"}
    assert c["sensors"] == deploy.BOARD_SENSORS


def test_budget_fits_two_app_slots_identity_config_and_the_log_quota(pki_state, thing):
    files = deploy.deploy_files(pki_state, thing, deploy.board_config(pki_state, thing, broker_host="10.0.0.5"))
    b = deploy.budget(files).check()
    assert b.total == 960 * 1024 and b.app_slots == 2 and b.log_quota == 256 * 1024
    assert b.need <= b.total and b.free > 0
    # the image itself holds one app: it mounts, and every file is in it
    back = deploy.files_in_image(deploy.build_image(files))
    assert back == {**flashimage.FRESH_STATE, **files}   # a fresh filesystem: nothing in the outbox
    with pytest.raises(deploy.DeployError, match="does not fit"):
        deploy.budget(files, log_quota=b.free + deploy.DEFAULT_LOG_QUOTA + 1).check()


def test_identity_conflicts_only_for_different_files(pki_state, thing):
    files = deploy.deploy_files(pki_state, thing, deploy.board_config(pki_state, thing, broker_host="10.0.0.5"))
    same = {p: deploy.sha256_hex(files[p]) for p in deploy.IDENTITY_FILES}
    assert deploy.identity_conflicts(same, files) == []
    assert deploy.identity_conflicts({p: None for p in deploy.IDENTITY_FILES}, files) == []
    assert deploy.identity_conflicts(dict(same, **{"/identity/key.der": "00" * 32}), files) == ["/identity/key.der"]


def test_hash_script_is_micropython_that_hashes_files(tmp_path):
    from support.devrun import run_mp
    (tmp_path / "a").write_bytes(b"x" * 3000)
    r = run_mp(deploy.hash_script([str(tmp_path / "a"), str(tmp_path / "missing")]))
    got = deploy.parse_hashes(r.stdout)
    assert got == {str(tmp_path / "a"): deploy.sha256_hex(b"x" * 3000), str(tmp_path / "missing"): None}
    with pytest.raises(deploy.DeployError, match="did not answer"):
        deploy.parse_hashes("Traceback ...")


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    """A state of its own with a broker for the LAN (`warden broker config`, certificate for
    broker.lan and 192.168.1.10) and one device: the shared pki_state must not gain a broker that
    revocations would then try to reach."""
    from warden.fleet import pki
    from warden.state import State

    state = State(tmp_path_factory.mktemp("lan") / ".warden")
    pki.init_pki(state)
    r = CliRunner().invoke(main, ["--state", str(state.root), "broker", "config", str(state.root.parent / "lanbroker"),
                                  "--listen", "0.0.0.0:8883", "--name", "broker.lan", "--name", "192.168.1.10"])
    assert r.exit_code == 0, r.output
    devices.add_device(state, "board-lan")
    return state


def _deploy(state, *args, env=None):
    return CliRunner().invoke(main, ["--state", str(state.root), "deploy", "board-lan", *args], env=env)


def test_deploy_image_only_cli_keeps_the_password_off_screen(lan, tmp_path, monkeypatch):
    out = tmp_path / "vfs.bin"
    monkeypatch.setenv("WARDEN_WIFI_PASSWORD", "s3cret-wifi")
    r = _deploy(lan, "--image-only", str(out), "--wifi-ssid", "lab", "--broker-host", "192.168.1.10")
    assert r.exit_code == 0, r.output
    assert "s3cret-wifi" not in r.output and out.stat().st_mode & 0o777 == 0o600
    files = deploy.files_in_image(out.read_bytes())
    assert json.loads(files["/config.json"])["wifi"]["password"] == "s3cret-wifi"
    monkeypatch.delenv("WARDEN_WIFI_PASSWORD")
    r = _deploy(lan, "--image-only", str(out), "--wifi-ssid", "lab", "--broker-host", "192.168.1.10")
    assert r.exit_code == 1 and "WARDEN_WIFI_PASSWORD" in r.output
    r = CliRunner().invoke(main, ["--state", str(lan.root), "deploy", "nobody", "--image-only", str(out),
                                  "--broker-host", "192.168.1.10"])
    assert r.exit_code == 1 and "no device" in r.output


def test_deploy_needs_a_broker_address_that_its_certificate_names(lan, tmp_path):
    out = tmp_path / "vfs.bin"
    # no address: never the project's localhost, which on a board is the board itself
    r = _deploy(lan, "--image-only", str(out))
    assert r.exit_code == 1 and "--broker-host is missing" in r.output and "Traceback" not in r.output, r.output
    for loopback in ("localhost", "127.0.0.1", "::1"):
        r = _deploy(lan, "--image-only", str(out), "--broker-host", loopback)
        assert r.exit_code == 1 and "the board itself" in r.output, (loopback, r.output)
    # an address no broker certificate of this state names: the board's TLS would refuse the broker
    r = _deploy(lan, "--image-only", str(out), "--broker-host", "10.9.9.9")
    assert r.exit_code == 1 and "no broker certificate names '10.9.9.9'" in r.output, r.output
    assert "broker.lan, 192.168.1.10" in r.output   # what the certificates do name
    assert "warden broker config DIR --listen ADDR:8883 --name 10.9.9.9" in r.output
    r = _deploy(lan, "--image-only", str(out), "--broker-host", "broker.lan.evil.example")
    assert r.exit_code == 1 and "no broker certificate names" in r.output
    assert not out.exists()   # nothing was built for any of them
    # names the certificate carries: by IP, by name (any case), or the host's address with the name
    for args in (["--broker-host", "192.168.1.10"], ["--broker-host", "Broker.LAN"],
                 ["--broker-host", "10.9.9.9", "--broker-hostname", "broker.lan"]):
        r = _deploy(lan, "--image-only", str(out), *args)
        assert r.exit_code == 0, (args, r.output)
        cfg = json.loads(deploy.files_in_image(out.read_bytes())["/config.json"])
        assert cfg["broker"]["host"] == args[1]
    assert cfg["broker"]["hostname"] == "broker.lan"


def test_deploy_image_only_prints_the_whole_esptool_command(lan, tmp_path):
    out = tmp_path / "vfs.bin"
    r = _deploy(lan, "--image-only", str(out), "--broker-host", "192.168.1.10")
    assert r.exit_code == 0, r.output
    assert f"-m esptool --chip esp32 --port PORT --baud 460800 write-flash 0x310000 {out}" in r.output, r.output
    r = _deploy(lan, "--image-only", str(out), "--broker-host", "192.168.1.10", "--port", "/dev/ttyUSB3",
                "--chip", "esp32")
    assert "--chip esp32 --port /dev/ttyUSB3 --baud 460800 write-flash 0x310000" in r.output, r.output


def test_broker_names_match_as_the_board_checks_them():
    m = deploy.name_matches
    assert m("192.168.1.10", "192.168.1.10") and m("::1", "0:0:0:0:0:0:0:1") and not m("192.168.1.1", "192.168.1.10")
    assert m("Broker.LAN", "broker.lan") and m("a.lan", "*.lan") and not m("a.b.lan", "*.lan")
    assert not m("lan", "*.lan") and not m("broker.lan", "broker.lan.example") and not m("10.0.0.1", "*.0.0.1")


# -- --port auto: the serial ports are faked at their one seam (this machine has no board) -------------
ESP = ports.Port("/dev/ttyUSB0", "CP2102 USB to UART Bridge Controller", 0x10C4, 0xEA60)
CH340 = ports.Port("/dev/ttyUSB1", "USB2.0-Serial", 0x1A86, 0x7523)
UART = ports.Port("/dev/ttyS0", "ttyS0", None, None)   # a PC's own UART: never a board


@pytest.fixture
def attached(monkeypatch):
    def put(*found):
        monkeypatch.setattr(ports, "comports", lambda: list(found))
    return put


def test_port_auto_takes_the_one_board_and_refuses_to_guess(attached):
    attached(UART)
    with pytest.raises(ports.PortError, match="no board found") as e:
        ports.resolve("auto")
    assert "--port" in e.value.hint
    attached(UART, CH340, ESP)
    with pytest.raises(ports.PortError) as e:
        ports.resolve(None)
    msg = str(e.value)
    assert "2 USB serial ports" in msg and "/dev/ttyS0" not in msg
    assert "/dev/ttyUSB0 (CP2102 USB to UART Bridge Controller, 10c4:ea60)" in msg
    assert "/dev/ttyUSB1 (USB2.0-Serial, 1a86:7523)" in msg
    attached(UART, ESP)
    assert ports.resolve("auto") == "/dev/ttyUSB0"
    assert ports.resolve("/dev/ttyACM5") == "/dev/ttyACM5"   # a named port is taken as it is


def test_the_real_port_list_is_pyserials():
    from serial.tools import list_ports
    assert [p.device for p in ports.comports()] == [p.device for p in list_ports.comports()]


def test_flash_finds_the_board_and_prints_each_esptool_command(images, attached, monkeypatch):
    ok = images("firmware.bin", combined(espimage.build_image("v1.29.0", 100 * 1024)))
    ran = []
    real = flash.run_steps

    def esptool(argv):   # the board's side of esptool: every step succeeds
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(flash, "run_steps", lambda steps, runner=None, say=None: real(steps, esptool, say))
    attached()
    r = CliRunner().invoke(main, ["flash", "--firmware", str(ok), "--yes"])
    assert r.exit_code == 1 and "error: no board found" in r.output and not ran, r.output
    attached(ESP, CH340)
    r = CliRunner().invoke(main, ["flash", "--firmware", str(ok), "--yes"])
    assert r.exit_code == 1 and "10c4:ea60" in r.output and "1a86:7523" in r.output and not ran, r.output
    r = CliRunner().invoke(main, ["flash", "--firmware", str(ok), "--check-only"])
    assert r.exit_code == 0, r.output   # an offline check needs no board
    attached(UART, ESP)
    r = CliRunner().invoke(main, ["flash", "--firmware", str(ok), "--yes"])
    assert r.exit_code == 0, r.output
    assert [a[a.index("--port") + 1] for a in ran] == ["/dev/ttyUSB0"] * 2
    out = " ".join(r.output.split())
    assert "-m esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 erase-flash" in out, out
    assert f"--chip esp32 --port /dev/ttyUSB0 --baud 460800 write-flash 0x1000 {ok}" in out, out


def test_deploy_and_logs_pull_find_the_board(lan, attached):
    attached(ESP, CH340)
    for argv in (["deploy", "board-lan", "--broker-host", "192.168.1.10"],
                 ["deploy", "board-lan", "--broker-host", "192.168.1.10", "--image"],
                 ["logs", "pull", "board-lan", "--port", "auto"]):
        r = CliRunner().invoke(main, ["--state", str(lan.root), *argv])
        assert r.exit_code == 1 and "cannot choose" in r.output and "/dev/ttyUSB1 (USB2.0-Serial" in r.output, r.output
    attached(UART)
    r = CliRunner().invoke(main, ["--state", str(lan.root), "logs", "pull", "board-lan", "--port", "auto"])
    assert r.exit_code == 1 and "no board found" in r.output
    # one board: mpremote is run on it (real mpremote; the device node does not exist here)
    attached(ports.Port("/dev/ttyWARDEN-test0", "Espressif USB JTAG/serial debug unit", 0x303A, 0x1001))
    r = _deploy(lan, "--broker-host", "192.168.1.10")
    assert r.exit_code == 1 and "/dev/ttyWARDEN-test0" in r.output and "Traceback" not in r.output, r.output


# -- manifest.py and mip package.json ----------------------------------------------------------
def _manifest_calls():
    tree = ast.parse((ROOT / "manifest.py").read_text())
    return [(n.func.id, [ast.literal_eval(a) for a in n.args], {k.arg: ast.literal_eval(k.value) for k in n.keywords})
            for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]


def test_manifest_freezes_every_device_file():
    calls = _manifest_calls()
    frozen = set()
    for fn, args, kw in calls:
        assert fn in ("include", "freeze", "module", "package"), fn
        if fn == "module":
            base = ROOT / kw.get("base_path", ".")
            assert (base / args[0]).is_file(), args[0]
            frozen.add((base / args[0]).resolve())
        if fn == "package":
            base = ROOT / kw.get("base_path", ".")
            assert (base / args[0] / "__init__.py").is_file() or (base / args[0]).is_dir(), args[0]
            frozen.update(p.resolve() for p in (base / args[0]).rglob("*.py"))
    assert ("include", ["$(PORT_DIR)/boards/manifest.py"], {}) in calls
    device = {p.resolve() for d in ("firmware", "lib") for p in (ROOT / d).rglob("*.py")}
    assert device <= frozen, sorted(str(p) for p in device - frozen)


def test_package_json_files_name_existing_files_and_every_lib_module():
    for pkg in (ROOT / "lib" / "package.json", ROOT / "package.json"):
        spec = json.loads(pkg.read_text())
        assert set(spec) <= {"urls", "deps", "version"} and isinstance(spec["version"], str)
        for dest, src in spec["urls"]:
            assert not dest.startswith("/") and (pkg.parent / src).is_file(), (pkg, dest, src)
        for dep in spec.get("deps", []):
            assert isinstance(dep, list) and len(dep) == 2
    lib = json.loads((ROOT / "lib" / "package.json").read_text())
    assert sorted(d for d, _ in lib["urls"]) == sorted(p.name for p in (ROOT / "lib").glob("*.py"))
    top = json.loads((ROOT / "package.json").read_text())
    dests = {d for d, _ in top["urls"]}
    want = {p.relative_to(ROOT).as_posix() for p in (ROOT / "firmware").rglob("*.py")} | {"boot.py", "main.py"}
    assert want <= dests, sorted(want - dests)


def test_a_deploy_carries_the_registry_counters_and_never_lowers_the_boards(pki_state, tmp_path):
    """Anti-downgrade survives re-flashing: the image and the mpremote deploy carry the registry's
    counters per kind; merged on a board, the higher counter per kind wins."""
    from support.devrun import run_mp
    from warden.fleet.registry import Registry

    devices.add_device(pki_state, "board-ctr")
    with Registry(pki_state.registry_path) as reg:
        reg.update("board-ctr", app_counter=40, app_version="4.0.0", firmware_counter=7, firmware_version="1.29.1")
    files = deploy.deploy_files(pki_state, "board-ctr", {"thing": "board-ctr"})
    assert json.loads(files[deploy.SECURITY_STATE]) == {"app": [40, "4.0.0"], "firmware": [7, "1.29.1"]}
    # the board already holds a higher firmware counter and a lower app counter: merge
    board = tmp_path / "state"
    board.mkdir()
    (board / "ota.json").write_text(json.dumps({"firmware": [9, "1.30.0"], "app": [3, "0.3.0"]}))
    code = deploy.merge_counters_code(json.loads(files[deploy.SECURITY_STATE])).replace(
        "/state", str(board))
    r = run_mp(code)
    assert r.returncode == 0, r.stderr
    assert json.loads((board / "ota.json").read_text()) == {"app": [40, "4.0.0"], "firmware": [9, "1.30.0"]}
    # mpremote copies it by merging, never as a file, and removes the OTA app slots first
    plan = deploy.mpremote_plan("PORT", tmp_path, files, write_identity=True)
    what = [w for w, _ in plan.steps]
    assert what[0] == "remove the old app" and "keep the security counters" in what
    assert "/app" in " ".join(map(str, plan.steps[0][1])) and not any("copy /state" in w for w in what)
