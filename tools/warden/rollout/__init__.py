"""Staged OTA rollouts: a signed update sent to many devices over one MQTT connection, canary first,
at a rate with a ramp, each device held to a health gate after it confirms, the whole stopped by its
abort rule (docs/rollout.md)."""
