"""Issue 6: a 1 MiB firmware update end to end over the MQTT chunk transport (warden ota push ->
broker -> the twin's own session -> verified engine -> set_boot -> reset -> self-test -> confirmed):
install time and throughput, and the time from the reset to the confirmation."""
import re
import time

from tests.support.twinproc import Twin  # the tests' twin runner: restarts the twin on reset
from warden.board import espimage, twin as twinlib
from warden.fleet import devices
from warden.ota import image, keys, push as otapush

HEAP = "192k"
SIZE = 1024 * 1024


def run(fleet):
    state = fleet.state
    if not keys.has_key(state):
        keys.init_keys(state)
    state.broker_port = fleet.broker.port
    devices.add_device(state, "bench-ota")
    flash = twinlib.flash_path(state, "bench-ota")
    twinlib.update_config(flash, broker={"host": "localhost", "port": fleet.broker.port}, interval_ms=200,
                          selftest_ms=30000)
    t = Twin(flash, heap=HEAP).start()
    try:
        t.wait_for(r"INFO telemetry: first reading", 20)
        data = image.sign(espimage.build_image("1.30.0", SIZE), "firmware", "1.30.0", 1,
                          image.default_target(state), keys.load_private_key(state))
        upd = fleet.tmp / "bench.wup"
        upd.write_bytes(data)
        marks = {}

        def progress(off, size):
            marks.setdefault("first", time.monotonic())
            if off >= size:
                marks["sent"] = time.monotonic()

        t0 = time.monotonic()
        out = otapush.push(state, "bench-ota", upd, progress=progress)
        total = time.monotonic() - t0
        if out.result != otapush.INSTALLED:
            raise RuntimeError("update not installed: %s" % (out,))
        # reset -> confirmed, from the device's own uptime stamps after the reset
        after = t.lines[t.lines.index("--- reset ---"):]
        confirmed = next(l for l in after if "self-test passed" in l)
        reboot_to_confirm_ms = int(confirmed.split()[0])
    finally:
        t.stop()
    size = len(image.split(data)[2])
    transfer = marks["sent"] - marks["first"]
    return [
        {"metric": "1 MiB firmware update: push -> installed and confirmed, s", "warden twin": round(total, 2),
         "target": ""},
        {"metric": "transfer throughput over the MQTT chunk transport, MB/s", "warden twin":
         round(size / transfer / 1e6, 2), "target": ">= 1 MB/s"},
        {"metric": "reset -> self-test passed (confirmed), ms (device uptime)", "warden twin": reboot_to_confirm_ms,
         "target": ""},
    ]


if __name__ == "__main__":
    from bench.common import fleet, print_table
    with fleet() as f:
        rows = run(f)
        print_table("OTA over MQTT", rows, list(rows[0].keys()))
