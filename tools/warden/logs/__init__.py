"""The device's encrypted log on the host: its format (decode, verify; write for tests) and the
pull/show service that gets it out of a twin or a board."""
