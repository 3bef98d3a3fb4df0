"""moto in server mode: a real HTTP server on loopback standing in for AWS's API, for the tests and
the benchmark of `warden aws` (boto3 talks to it over HTTP like to AWS).

`MotoServer().start()` runs `python -m moto.server` on a free port (port 0: it prints the one it
got), waits for that line, and turns on moto's option that gives a certificate AWS's id (the
SHA-256 of its DER; moto's default hashes the PEM text; its /moto-api/config does not reach
that option, so the server is started from a line of Python that sets it first). `env()` is what a process under test
needs: fake credentials, a region, and no AWS configuration of the user's machine.
"""
import sys
import urllib.request

from .process import Process


_LAUNCH = ("from moto.core.config import default_user_config as c; c['iot'] = {'use_valid_cert': True}; "
           "from moto.server import main; main(['-H', '127.0.0.1', '-p', '0'])")


class MotoServer(Process):
    name = "moto server"

    def __init__(self, env=None):
        """`env`: the server's environment (e.g. INITIAL_NO_AUTH_ACTION_COUNT=N makes it check IAM
        permissions after the first N requests); default: this process's."""
        super().__init__([sys.executable, "-c", _LAUNCH], env=env)
        self.url = None

    def start(self):
        super().start()
        m = self.wait_for(r"Running on (http://127\.0\.0\.1:\d+)", timeout=30)
        self.url = m.group(1)
        return self

    def reset(self):
        """Forget every resource (a fresh account); the config set at start stays."""
        req = urllib.request.Request(self.url + "/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    @staticmethod
    def env(base=None, credentials=True) -> dict:
        env = dict(base or {})
        for k in [k for k in env if k.startswith("AWS_")]:
            del env[k]
        env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        env["AWS_DEFAULT_REGION"] = "eu-west-1"
        if credentials:
            env["AWS_ACCESS_KEY_ID"] = "testing"
            env["AWS_SECRET_ACCESS_KEY"] = "testing"
        return env
