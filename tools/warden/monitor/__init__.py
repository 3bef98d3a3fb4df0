"""Fleet monitoring (`warden monitor`): the devices' status and metrics reports and the broker's own
signals, kept per device in the registry, judged by the rules of `<state>/rules.json`, alerts raised
and cleared, and the actions an operator attaches to a rule (docs/monitor.md)."""
