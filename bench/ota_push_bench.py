"""A firmware update end to end over the MQTT chunk transport (warden ota push -> broker -> the
twin's own session -> verified engine -> set_boot -> reset -> self-test -> confirmed):

- on loopback, 1 MiB: install time and throughput, and the time from the reset to the confirmation;
- over an emulated link (the tests' TCP proxy between the twin and the broker: 50 ms each way,
  2 Mbit/s each way), 1.5 MiB: the transfer time in a window of chunks (the default) and
  stop-and-wait (one chunk per round trip), against the link's own time for the payload."""
import time

from tests.support.twinproc import Twin  # the tests' twin runner: restarts the twin on reset
from warden.board import espimage, twin as twinlib
from warden.fleet import devices
from warden.ota import image, keys, push as otapush

HEAP = "192k"
SIZE = 1024 * 1024
LINK_SIZE = 1536 * 1024
LINK_DELAY, LINK_RATE = 0.050, 2_000_000     # each way: a 100 ms round trip at 2 Mbit/s


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


def _transfer_over_link(fleet, thing, upd, window, interval_ms=5000):
    """Seconds from the first chunk sent to the last taken, pushing `upd` to a fresh twin whose
    link to the broker is the shaped proxy."""
    from tests.support.netproxy import Proxy
    state = fleet.state
    proxy = Proxy(fleet.broker.port, delay=LINK_DELAY, rate=LINK_RATE)
    devices.add_device(state, thing)
    flash = twinlib.flash_path(state, thing)
    twinlib.update_config(flash, broker={"host": "localhost", "port": proxy.port}, interval_ms=interval_ms,
                          selftest_ms=60000)
    t = Twin(flash, heap=HEAP).start()
    try:
        t.wait_for(r"INFO telemetry: first reading", 30)
        marks = {}

        def progress(off, size):
            marks.setdefault("first", time.monotonic())
            if off >= size:
                marks["sent"] = time.monotonic()
        out = otapush.push(state, thing, upd, progress=progress, window=window, timeout=60, confirm_timeout=120)
        if out.result != otapush.INSTALLED:
            raise RuntimeError("update not installed: %s" % (out,))
        return marks["sent"] - marks["first"]
    finally:
        t.stop()
        proxy.close()


def run_link(fleet):
    state = fleet.state
    if not keys.has_key(state):
        keys.init_keys(state)
    state.broker_port = fleet.broker.port
    data = image.sign(espimage.build_image("1.31.0", LINK_SIZE), "firmware", "1.31.0", 2,
                      image.default_target(state), keys.load_private_key(state))
    upd = fleet.tmp / "bench-link.wup"
    upd.write_bytes(data)
    size = len(image.split(data)[2])
    link = size * 8 / LINK_RATE          # the payload alone at the link's rate
    windowed = _transfer_over_link(fleet, "bench-link-w", upd, otapush.WINDOW)
    busy = _transfer_over_link(fleet, "bench-link-b", upd, otapush.WINDOW, interval_ms=1000)
    stop_and_wait = _transfer_over_link(fleet, "bench-link-s", upd, 1)
    name = "1.5 MiB firmware, 100 ms / 2 Mbit/s link: transfer s"
    row = lambda what, s, target="": {"metric": f"{name}, {what}", "warden": round(s, 1),
                                      "link's own time": round(link, 1), "ratio": round(s / link, 2),
                                      "target": target}
    return [row(f"window {otapush.WINDOW}, a reading every 5 s", windowed, "<= 1.5"),
            row(f"window {otapush.WINDOW}, a reading every 1 s", busy),
            row("stop-and-wait, a reading every 5 s", stop_and_wait)]


NOTE_LINK = ("A reading's PUBACK wait reads the chunks that come meanwhile; the device keeps one and asks "
             "for the rest again (go-back-N): the more often it publishes, the more the window resends.")


if __name__ == "__main__":
    from bench.common import fleet, print_table
    with fleet() as f:
        rows = run(f)
        print_table("OTA over MQTT", rows, list(rows[0].keys()))
        rows = run_link(f)
        print_table("OTA over an emulated link", rows, list(rows[0].keys()))
