"""A real `warden dashboard` server for tests: started on a free port in a thread of its own (its
own asyncio loop), so a test talks to it over a socket with any client, a browser included; and a
fleet for it to show, filled through the stores' own APIs."""
from __future__ import annotations

import asyncio
import threading
import time

from warden.dashboard.server import start
from warden.fleet.registry import Registry
from warden.monitor.store import Store as MonitorStore
from warden.rollout.store import Plan, Store as RolloutStore

THINGS = ("dev-a", "dev-b", "dev-c")


class Running:
    def __init__(self, state, host="127.0.0.1", principal=None):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        try:
            self.runner, self.url = asyncio.run_coroutine_threadsafe(
                start(state, host, 0, principal), self.loop).result(15)
        except BaseException:
            self._stop()
            raise
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))

    def _stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self._stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fill(state, things=THINGS):
    """Registry rows for `things` (dev-a tagged site=lab), dev-a online with a metrics report and an
    open alert, dev-b offline, and a rollout `r1` of all of them, canary 1 (dev-a succeeded)."""
    from warden.fleet.groups import set_tags

    with Registry(state.registry_path) as reg:
        for i, thing in enumerate(things):
            reg.add(thing, f"{i:064x}", i + 1)
    set_tags(state, things[0], ["site=lab"])
    now = time.time()
    with MonitorStore(state) as mon:
        mon.add_point(things[0], "status", now - 60, {"state": "online", "since": now - 60, "version": "1.0.0"})
        for k in range(5):
            mon.add_point(things[0], "metrics", now - 50 + k,
                          {"v": 1, "seq": k, "up": 100 + k * 10, "hf": 30000 - k * 100, "hl": 29000, "tx": k * 3,
                           "rx": k, "rc": "power-on", "ota": "idle", "rssi": None, "msg_rate": 6.0})
        mon.add_point(things[1], "status", now - 30, {"state": "offline", "since": now - 30, "reason": "lwt"})
        mon.raise_alert(things[0], "heap-low", now - 40, 29000, "heap free 29000 below 30000", {"hf": 29000})
    with RolloutStore(state) as ro:
        ro.create("r1", "app.wup", "0" * 64, "app", "1.1.0", 2, Plan(canary=1), list(things),
                  {t: "1.0.0" for t in things})
        ro.set_state("r1", "running")
        ro.set_member("r1", things[0], "succeeded", started=True, finished=True)
