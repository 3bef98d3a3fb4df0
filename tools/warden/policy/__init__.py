"""The fleet policy: the model (roles and topic rules), MQTT topic semantics, its renderings for
mosquitto and AWS IoT, an evaluator of mosquitto ACL files, and the proof that both renderings
agree on every topic."""
