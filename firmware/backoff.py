# Reconnect delays: exponential backoff with full jitter, capped.
#
# The n-th consecutive failure waits a random time in [0, min(cap, base * 2^n)],
# so a fleet that lost its broker does not reconnect in lockstep. reset()
# after a connection has proved stable starts again from `base`.
import os


class Backoff:
    def __init__(self, base_ms, cap_ms):
        self.base = base_ms
        self.cap = cap_ms
        self.failures = 0

    def ceiling(self):
        c = self.base << min(self.failures, 20)
        return c if c < self.cap else self.cap

    def next_delay(self):
        c = self.ceiling()
        self.failures += 1
        r = int.from_bytes(os.urandom(4), "big")  # the hardware RNG on a board
        return r % (c + 1)

    def reset(self):
        self.failures = 0
