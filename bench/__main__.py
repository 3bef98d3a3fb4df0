"""`make bench`: every benchmark, measured side by side with its peers in one run, as tables.

Each section runs against one throwaway fleet (PKI + mosquitto on loopback). A section
whose module is missing is skipped with a note; one that fails prints its error and
the others still run (the exit code is then non-zero).
"""
import importlib
import sys
import traceback

from bench.common import fleet, print_table


def _mqtt(f):
    from bench import mqtt_bench
    rows = mqtt_bench.run(f.broker, f.identity("bench-mqtt"), app=f.state.app)
    print_table("MQTT client: lib/mqtt under micropython vs paho-mqtt under CPython", rows,
                ["metric", "lib/mqtt (micropython)", "paho-mqtt (CPython)", "paho mode", "ratio"],
                note="ratio >= 1.0: lib/mqtt at least as good as paho on that line")


def _twin(f):
    from bench import twin_bench
    print_table("Device twin start-up", twin_bench.run(f), twin_bench.COLS,
                note="ratio > 1: the twin is faster than a minimal paho script doing the same")


def _optional(name, title, fn="run", note="NOTE"):
    def section(f):
        try:
            mod = importlib.import_module("bench." + name)
        except ImportError:
            print("\n## %s\n(skipped: bench/%s.py not present)" % (title, name))
            return
        run = getattr(mod, fn)
        code = run.__code__
        rows = run(f) if code.co_argcount and code.co_varnames[0] == "fleet" else run()
        cols = [c for c in getattr(mod, "COLS", None) or (list(rows[0].keys()) if rows else ["metric"])
                if any(c in r for r in rows)]
        print_table(title, rows, cols, note=getattr(mod, note, None))
    return section


SECTIONS = [
    ("mqtt", _mqtt),
    ("twin", _twin),
    ("heap", _optional("heap_bench", "Device heap: 64-bit twin and 32-bit port")),
    ("logstore", _optional("logstore_bench", "Encrypted log store")),
    ("fleet", _optional("fleet_bench", "Fleet: provisioning and revocation")),
    ("tls", _optional("tls_bench", "Broker TLS: what each client negotiates")),
    ("peers", _optional("peers_bench", "MQTT client vs umqtt.simple and mqtt_as (same micropython, same broker)")),
    ("abuse", _optional("abuse_bench", "What a remote party can make a device do")),
    ("ota", _optional("ota_bench", "Signed OTA: verification and install engine")),
    ("ota-push", _optional("ota_push_bench", "Signed OTA over the MQTT chunk transport")),
    ("ota-link", _optional("ota_push_bench", "Signed OTA over an emulated link (100 ms round trip, 2 Mbit/s)",
                           "run_link", "NOTE_LINK")),
    ("resilience", _optional("resilience_bench", "Resilience: outbox drain, reconnect, QoS 1")),
    ("logs-remote", _optional("logs_remote_bench", "Remote log pull: over MQTT vs from the twin flash")),
    ("aws", _optional("aws_bench", "warden aws sync: 1,000 devices against moto (AWS's API on loopback)")),
    ("device-list", _optional("device_list_bench", "`warden device list` on a 1,000-device registry")),
    ("rollout", _optional("rollout_bench", "Rollouts: 20 twins, one app update, and a misbehaving canary stopped")),
    ("monitor-ingest", _optional("monitor_bench", "`warden monitor`: metrics reports ingested a second")),
]


def main(argv):
    only = set(argv)
    failed = []
    with fleet() as f:
        for name, fn in SECTIONS:
            if only and name not in only:
                continue
            try:
                fn(f)
            except Exception:
                failed.append(name)
                print("\n## %s: FAILED" % name)
                traceback.print_exc()
    if failed:
        print("\nfailed sections: %s" % ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
