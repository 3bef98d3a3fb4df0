"""`warden rollout create|run|pause|resume|abort`: the rollout's decisions (docs/rollout.md).

`run` drives one rollout to its end: the canary stage first (every canary device must install,
confirm and pass its health gate before any other device is touched), then the rest at the plan's
rate (devices started per minute, multiplied by the ramp factor after every `ramp_every` devices
that succeeded, up to `max_rate`), at most `concurrency` transfers at once, all over one technician
session and one operator session (link.py). After a device confirms, its health gate runs for the
soak time; the abort rule is judged after every device that finishes. A device offline when its
turn comes is passed over and updated when its status says it is back (a device that sleeps gets
the update's head queued at the broker and takes it at its wake).

Everything the run decides is written to the registry first (store.py), so a run killed at any
moment and started again resumes: devices that finished are never sent the update again, a device
caught mid-update is asked for its state (it may have confirmed meanwhile) and resumed.
"""
from __future__ import annotations

import hashlib
import queue
import threading
import time
from pathlib import Path

from ..fleet.registry import Registry
from ..ota import image, push as otapush
from .store import ACTIVE, OPEN, Plan, RolloutError, Store

TICK_S = 0.2        # how often the run looks at its devices, results and the store


def create(state, name: str, file, things: list, plan: Plan) -> dict:
    """Check the update as every device will (signature, target, counter against each device's), then
    record the rollout; nothing is sent. Returns its summary."""
    from ..fleet.names import validate_thing
    validate_thing(name)        # a rollout's name follows the thing names' rules (safe anywhere it is shown)
    path = Path(file).resolve()
    data = path.read_bytes()
    if not things:
        raise RolloutError("the rollout has no devices", hint="name them with --to, or select them with --group or --all")
    if plan.canary < 1 or plan.concurrency < 1 or plan.rate <= 0 or plan.soak_s < 0:
        raise RolloutError("canary and concurrency must be at least 1, rate above 0 and soak not negative")
    old = {}
    m = None
    with Registry(state.registry_path) as reg:
        for thing in things:
            d = reg.get(thing)
            if d is None:
                raise RolloutError(f"no device named {thing} in the registry", hint="`warden device list`")
            if d.status == "revoked":
                raise RolloutError(f"{thing} is revoked: it can take no update", hint="leave it out of --to")
    for thing in things:
        try:
            m = otapush.check_locally(state, thing, data)
        except image.UpdateError as e:
            raise RolloutError(f"{thing} would refuse this update: {e}", hint=getattr(e, "hint", None)) from None
        with Registry(state.registry_path) as reg:
            d = reg.get(thing)
        old[thing] = getattr(d, f"{m.kind}_version", None) or d.version or "factory"
    with Store(state) as st:
        for thing in things:
            r = st.held_by(thing)
            if r is not None:
                raise RolloutError(f"{thing} is held by the rollout {r}",
                                   hint=f"let it finish, or `warden rollout abort {r}`")
        st.create(name, str(path), hashlib.sha256(data).hexdigest(), m.kind, m.version, m.counter, plan,
                  things, old)
        return st.summary(name)


def pause(state, name: str, reason: str = "paused by an operator") -> None:
    with Store(state) as st:
        r = st.require(name)
        if r.state not in ("created", "running"):
            raise RolloutError(f"the rollout {name} is {r.state}: only a created or running rollout pauses")
        st.set_state(name, "paused", reason)


def pause_holding(state, thing: str, reason: str) -> list:
    """Pause every active rollout that includes `thing` (the monitor's `pause` action); their names."""
    with Store(state) as st:
        names = [n for n in st.rollouts_of(thing) if st.get(n).state in ("created", "running")]
        for n in names:
            st.set_state(n, "paused", reason)
    return names


def resume(state, name: str) -> None:
    with Store(state) as st:
        r = st.require(name)
        if r.state != "paused":
            raise RolloutError(f"the rollout {name} is {r.state}, not paused")
        st.set_state(name, "running", None, event="resumed")


def abort(state, name: str, reason: str = "aborted by an operator", *, rollback=False, out=print,
          wait_s: float | None = None, **session) -> dict:
    """Stop the rollout (a running `run` starts no other device and ends once its transfers end).
    rollback: every device that confirmed its update (passed its gate or not) is sent back to its previous version by a signed rollback
    (warden.ota.push.rollback: the other slot's image, no download), once the transfers still
    under way have ended. Returns the summary."""
    with Store(state) as st:
        r = st.require(name)
        if r.state in ACTIVE:
            st.set_state(name, "aborted", reason)
        if not rollback:
            return st.summary(name)
        deadline = time.monotonic() + (wait_s if wait_s is not None else r.plan.timeout_s)
        while any(m.state == "sending" for m in st.members(name)) and time.monotonic() < deadline:
            time.sleep(TICK_S)       # a run still finishing a transfer: its outcome decides
        # every device that confirmed the update runs it, the ones that failed their gate first
        confirmed = set(st.confirmed(name))
        targets = [m for m in st.members(name) if m.thing in confirmed and m.state != "restored"]
    if targets:
        from .link import SharedTechnician
        tech = SharedTechnician(state, concurrency=len(targets), **session).connect()
        try:
            for m in targets:
                try:
                    o = otapush.rollback(state, m.thing, r.kind, channel=tech.channel(m.thing),
                                         timeout=30.0, confirm_timeout=r.plan.timeout_s)
                    ok = o.result == otapush.INSTALLED
                    why = None if ok else f"{o.result}: {o.reason}"
                except otapush.OtaPushError as e:
                    ok, why = False, str(e)
                with Store(state) as st:
                    if ok:
                        st.set_member(name, m.thing, "restored", f"back to {o.version}", finished=True)
                    else:
                        st.event(name, m.thing, "restore failed", why)
                out(f"{m.thing}: {'restored to ' + o.version if ok else 'not restored: ' + why}")
        finally:
            tech.close()
    with Store(state) as st:
        return st.summary(name)


class Run:
    """One `warden rollout run NAME`: see the module's docstring."""

    def __init__(self, state, name: str, *, out=print, technician="technician.default",
                 operator="operator.default", host=None, port=None, clock=time.monotonic):
        self.state, self.name, self.out = state, name, out
        self.session = dict(host=host, port=port)
        self.technician, self.operator = technician, operator
        self.clock = clock
        self.results: queue.Queue = queue.Queue()
        self._early: list = []            # results _wait() took off the queue, for _collect()
        self.inflight: dict = {}          # thing -> worker thread
        self.soaking: dict = {}           # thing -> (soak start, wall time of the confirmation, baseline)
        self.started = 0                  # devices started after the canary (the ramp and the rate count them)
        self.next_start = 0.0             # monotonic time the rate allows the next start at
        self.waiting_note = None

    # ---- the loop ----

    def run(self) -> dict:
        with Store(self.state) as st:
            r = st.require(self.name)
            if r.state == "paused":
                raise RolloutError(f"the rollout {self.name} is paused ({r.reason})",
                                   hint=f"`warden rollout resume {self.name}` runs it again")
            if r.state not in ("created", "running"):
                raise RolloutError(f"the rollout {self.name} is {r.state}: there is nothing left to run",
                                   hint=f"`warden rollout status {self.name}`")
            st.set_state(self.name, "running", None, event="run")
        self.rollout = r
        self.plan = r.plan
        from .link import SharedTechnician, Watcher
        self.watch = Watcher(self.state, principal=self.operator, **self.session).connect()
        try:
            self.tech = SharedTechnician(self.state, principal=self.technician, concurrency=self.plan.concurrency,
                                         **self.session).connect()
        except Exception:
            self.watch.close()
            raise
        try:
            self._recover()
            return self._loop()
        finally:
            self.tech.close()
            self.watch.close()

    def _recover(self):
        """Devices a killed run left mid-way: `soaking` ones soak again from now; `sending` ones are
        started again (push resumes from what the device kept, or finds it confirmed)."""
        with Store(self.state) as st:
            for m in st.members(self.name, ("sending", "soaking")):
                if m.state == "soaking":
                    self.soaking[m.thing] = (self.clock(), time.time(), m.baseline or {})
                    self.out(f"{m.thing}: confirmed before the restart; its health gate runs again")
                else:
                    st.set_member(self.name, m.thing, "waiting", "resumed after a restart", event="resumed")

    def _loop(self) -> dict:
        while True:
            self._collect()
            self._judge_soaks()
            with Store(self.state) as st:
                r = st.require(self.name)
                members = st.members(self.name)
            if r.state == "running":
                stop = self._abort_rule(members)
                if stop:
                    with Store(self.state) as st:
                        st.set_state(self.name, "aborted", stop)
                    self.out(f"rollout {self.name} stopped: {stop}")
                    r.state = "aborted"
            if r.state == "running":
                self._start_more(members)
            open_ = [m for m in members if m.state in OPEN]
            if not self.inflight and not self.soaking:
                if r.state != "running":
                    with Store(self.state) as st:
                        return st.summary(self.name)
                if not open_:
                    failed = sum(m.state == "failed" for m in members)
                    with Store(self.state) as st:
                        st.set_state(self.name, "done", f"{failed} of {len(members)} failed" if failed else None)
                        self.out(f"rollout {self.name} done: {len(members) - failed} of {len(members)} updated")
                        return st.summary(self.name)
            if self.watch.lost or self.tech_lost():
                raise otapush.OtaPushError("lost the connection to the broker",
                                           hint=f"run it again to resume: `warden rollout run {self.name}`")
            self._wait()

    def _wait(self):
        """Until a device's transfer ends (then at once: its slot goes to the next device) or a tick passed."""
        try:
            self._early.append(self.results.get(timeout=TICK_S))
        except queue.Empty:
            pass

    def tech_lost(self) -> bool:
        return not self.tech.client.is_connected()

    # ---- starting devices ----

    def _rate(self) -> float:
        p = self.plan
        if p.ramp_every > 0 and p.ramp_factor > 1:
            with Store(self.state) as st:
                done = sum(m.state == "succeeded" and m.stage == "main" for m in st.members(self.name))
            return min(p.max_rate, p.rate * p.ramp_factor ** (done // p.ramp_every))
        return min(p.max_rate, p.rate)

    def _start_more(self, members):
        canary = [m for m in members if m.stage == "canary"]
        canary_done = all(m.state == "succeeded" for m in canary)
        stage = "canary" if not canary_done else "main"
        if stage == "main" and any(m.state in OPEN for m in canary):
            return
        offline = []
        for m in members:
            if m.stage != stage or m.state != "waiting" or m.thing in self.inflight:
                continue
            if len(self.inflight) >= self.plan.concurrency:
                break
            if stage == "main" and self.clock() < self.next_start:
                break
            seen = self.watch.online(m.thing)
            if seen not in ("online", "asleep"):
                offline.append(m.thing)
                continue
            if self._skip_if_gone(m.thing):
                continue
            self._start(m.thing, asleep=seen == "asleep")
            if stage == "main":
                self.started += 1
                # The next start's slot follows this one's, not the moment the loop got here: the
                # loop looks once a tick, so a rate faster than a start a tick starts several
                # devices in one (at most a tick's worth: time spent at the concurrency limit
                # is not made up in a burst). A slower rate keeps its full gap between starts.
                gap = 60.0 / self._rate()
                slot = max(self.next_start, self.clock() - (TICK_S if gap < TICK_S else 0.0))
                self.next_start = slot + gap
        note = tuple(offline)
        if offline and note != self.waiting_note:
            self.out(f"waiting for {len(offline)} offline device(s) to appear: {', '.join(offline[:5])}"
                     + (" ..." if len(offline) > 5 else ""))
        self.waiting_note = note

    def _skip_if_gone(self, thing) -> bool:
        with Registry(self.state.registry_path) as reg:
            d = reg.get(thing)
        if d is not None and d.status != "revoked":
            return False
        with Store(self.state) as st:
            st.set_member(self.name, thing, "skipped", "revoked or removed since the rollout was made",
                          finished=True)
        return True

    def _start(self, thing, asleep=False):
        baseline = self.watch.last_metrics(thing) or {}
        with Store(self.state) as st:
            st.set_member(self.name, thing, "sending", None, baseline={"hf": baseline.get("hf")}, started=True)
        ch = self.tech.channel(thing)
        p = self.plan

        def work():
            try:
                o = otapush.push(self.state, thing, self.rollout.file, channel=ch, timeout=60.0,
                                 confirm_timeout=p.timeout_s, wake_timeout=p.timeout_s if asleep else None)
                self.results.put((thing, o, None))
            except Exception as e:      # reported as this device's failure; the run goes on
                self.results.put((thing, None, e))
            finally:
                ch.close()

        t = threading.Thread(target=work, name=f"rollout-{thing}", daemon=True)
        self.inflight[thing] = t
        self.out(f"{thing}: sending {self.rollout.kind} {self.rollout.version}")
        t.start()

    def _collect(self):
        while True:
            if self._early:
                thing, o, err = self._early.pop(0)
            else:
                try:
                    thing, o, err = self.results.get_nowait()
                except queue.Empty:
                    return
            self.inflight.pop(thing, None)
            with Store(self.state) as st:
                if o is not None and o.result == otapush.INSTALLED:
                    base = next((m.baseline for m in st.members(self.name) if m.thing == thing), None) or {}
                    st.set_member(self.name, thing, "soaking", None, event="confirmed")
                    self.soaking[thing] = (self.clock(), time.time(), base)
                    self.out(f"{thing}: confirmed {o.version}; health gate for {self.plan.soak_s:g} s")
                else:
                    why = f"{o.result}: {o.reason}" if o is not None else f"{type(err).__name__}: {err}"
                    st.set_member(self.name, thing, "failed", why, finished=True)
                    self.out(f"{thing}: failed: {why}")

    # ---- the health gate ----

    def _judge_soaks(self):
        p = self.plan
        for thing, (t0, wall0, base) in list(self.soaking.items()):
            seen = self.watch.since(thing, wall0)
            elapsed = self.clock() - t0
            why = gate_failure(p, seen, elapsed, base, self.watch.last_metrics(thing), self._alerts(thing, wall0))
            if why is None and elapsed < p.soak_s:
                continue
            del self.soaking[thing]
            with Store(self.state) as st:
                if why is None:
                    st.set_member(self.name, thing, "succeeded", None, finished=True)
                    self.out(f"{thing}: passed its health gate")
                else:
                    st.set_member(self.name, thing, "failed", f"health gate: {why}", finished=True)
                    self.out(f"{thing}: failed its health gate: {why}")

    def _alerts(self, thing, since_wall) -> list:
        """Rules of the monitor's alerts raised for THING since its confirmation (a `warden monitor`
        running beside the rollout judges the device by the fleet's rules)."""
        from ..monitor.store import Store as MonitorStore
        with MonitorStore(self.state) as ms:
            rows = ms.db.execute("SELECT rule FROM monitor_alerts WHERE thing = ? AND raised >= ?",
                                 (thing, since_wall)).fetchall()
        return [r[0] for r in rows]

    # ---- the abort rule ----

    def _abort_rule(self, members) -> str | None:
        p = self.plan
        for m in members:
            if m.stage == "canary" and m.state == "failed":
                return f"canary {m.thing} failed: {m.reason}"
        finished = [m for m in members if m.state in ("succeeded", "failed")]
        failed = [m for m in finished if m.state == "failed"]
        if len(finished) >= p.abort_min and finished and 100.0 * len(failed) / len(finished) >= p.abort_percent:
            return (f"{len(failed)} of {len(finished)} finished devices failed "
                    f"(abort at {p.abort_percent:g}% once {p.abort_min} finished)")
        return None


def gate_failure(plan: Plan, seen: dict, elapsed: float, baseline: dict, metrics: dict | None,
                 alerts: list) -> str | None:
    """Why a device fails its health gate `elapsed` seconds into its soak, or None (yet). `seen`: its
    messages since the confirmation (link.Watcher.since). A breach fails it at once; a shortfall
    (too few readings) only at the soak's end."""
    if seen["offline"]:
        return f"went offline {seen['offline']} time(s) during the soak (a reboot or a lost session)"
    sent = seen["telemetry"] + seen["status"] + seen["metrics"]
    allowed = plan.max_msgs_per_min * max(plan.soak_s, 1.0) / 60.0
    if sent > allowed:
        return (f"sent {sent} messages in {elapsed:.1f} s, more than {plan.max_msgs_per_min:g} a minute "
                f"allows in its {plan.soak_s:g} s soak")
    if alerts:
        return "monitor alert(s): " + ", ".join(sorted(set(alerts)))
    hf0 = (baseline or {}).get("hf")
    if hf0 is not None and metrics and metrics.get("hf") is not None and metrics["hf"] < hf0 - plan.heap_margin:
        return f"heap free fell to {metrics['hf']} bytes from {hf0} before the update (margin {plan.heap_margin})"
    if elapsed >= plan.soak_s and seen["telemetry"] < plan.min_readings:
        return f"sent {seen['telemetry']} readings in its {plan.soak_s:g} s soak (at least {plan.min_readings})"
    return None
