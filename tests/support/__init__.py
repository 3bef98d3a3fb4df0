"""Helpers the tests share; none of them is a test. pytest finds them as `support.<module>`
(pyproject.toml puts tests/ on the path), the benchmarks as `tests.support.<module>`.

    process          the one process runner: start, wait for an output line or the exit (with a
                     deadline), stop (Ctrl-C, then kill) or kill; Twin, Background, BoardSim are ones
    devrun           run MicroPython code under the real unix port (run_mp, Background)
    twinproc         a device twin process: start, wait for what it logs, stop, power-cut
    boardsim         a stand-in serial board for mpremote: the unix port on a pseudo-terminal
    netproxy         a loopback TCP proxy that forwards, refuses or blackholes a device's link
    fixtures_broker  pytest plugin: a fleet PKI, a real mosquitto, identities, MQTT probes
    certfactory      certificates and keys made at test time
    otakit           OTA signing keys, twin flash files and signed updates
    otavectors       the `ota_vectors` fixture: a template flash and one update per attack
    configvectors    the `config_vectors` fixture: signed remote-settings commands, one per attack
    mp/              MicroPython programs the tests run under the unix port (run_mp(script=MP / ...)),
                     each saying at its top what it does and what its arguments are
"""
