"""The fleet's mosquitto brokers: their config and the one warden runs (server), carrying
revocations and the ACL to every broker (control), and the guard plugin they load (guard)."""
