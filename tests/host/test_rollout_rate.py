"""The rollout's rate (devices started a minute after the canary), on a clock the test moves: a
rate faster than one start per tick of the run's loop is kept on average (several starts in one
tick), and a slower rate keeps its whole gap between two starts. No broker, no device: the run's
start decision alone (`Run._start_more`), its device starts recorded."""
from types import SimpleNamespace

from warden.rollout import runner
from warden.rollout.store import Plan


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _run(rate, concurrency=1000):
    clock = Clock()
    r = runner.Run(None, "r", out=lambda line: None, clock=clock)
    r.plan = Plan(rate=rate, max_rate=100000.0, concurrency=concurrency)
    r.watch = SimpleNamespace(online=lambda thing: "online")
    r._skip_if_gone = lambda thing: False
    starts = []

    def start(thing, asleep=False):
        starts.append(clock.t)
        r.inflight[thing] = None
    r._start = start
    members = [SimpleNamespace(stage="main", state="waiting", thing="d%03d" % i) for i in range(500)]
    return r, clock, members, starts


def _ticks(r, clock, members, seconds):
    for i in range(int(round(seconds / runner.TICK_S)) + 1):
        clock.t = 1000.0 + i * runner.TICK_S
        r._start_more(members)


def test_a_rate_faster_than_the_tick_is_kept():
    r, clock, members, starts = _run(rate=3000.0)        # one start every 20 ms: ten a tick
    _ticks(r, clock, members, 2.0)
    # 2 s at 50 a second, and at most one tick's worth more (the first tick's)
    assert 100 <= len(starts) <= 100 + 10 + 1, len(starts)


def test_a_slower_rate_keeps_its_gap_between_starts():
    r, clock, members, starts = _run(rate=120.0)         # one start every 0.5 s
    _ticks(r, clock, members, 5.0)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) >= 5 and min(gaps) >= 0.5 - 1e-9, starts


def test_time_at_the_concurrency_limit_is_not_made_up_in_a_burst():
    r, clock, members, starts = _run(rate=3000.0, concurrency=2)
    _ticks(r, clock, members, 1.0)
    assert len(starts) == 2                                # the limit, whatever the rate
    r.inflight.clear()                                     # both transfers end, a second later
    clock.t += 60.0
    r.plan.concurrency = 1000
    r._start_more(members)
    assert len(starts) - 2 <= runner.TICK_S * 3000.0 / 60.0 + 1, len(starts)
