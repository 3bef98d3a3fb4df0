"""What `warden aws setup` recorded: <state>/aws.json (region, profile, account, ATS endpoint,
registration mode, the CA's id in AWS, an endpoint URL for the AWS API).

It only reads and writes that file; it must not talk to AWS. The file is outside <state>/aws/,
the folder of rendered policy documents that `warden audit` reads.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..errors import WardenError
from ..state import State, write_file

FILE = "aws.json"
MODES = ("ca", "without-ca")   # the fleet CA registered with AWS IoT, or each certificate without it


class AwsSetupMissing(WardenError):
    hint = "run `warden aws setup --region REGION` first (docs/aws.md)"


@dataclass
class AwsProject:
    region: str
    account: str
    endpoint: str                      # the account's iot:Data-ATS host (devices connect there on 8883)
    mode: str = "ca"
    profile: str | None = None
    ca_certificate_id: str | None = None
    endpoint_url: str | None = None    # the AWS API endpoint, for a stand-in such as moto (None: AWS)

    def client(self, **kw):
        from .client import Aws

        return Aws(self.region, self.profile, self.endpoint_url, **kw)


def path(state: State):
    return state.root / FILE


def load(state: State) -> AwsProject:
    p = path(state)
    if not p.exists():
        raise AwsSetupMissing(f"the project is not set up for AWS IoT ({p} is missing)")
    try:
        data = json.loads(p.read_text())
        return AwsProject(**data)
    except (OSError, ValueError, TypeError) as e:
        raise AwsSetupMissing(f"cannot read {p}: {e}",
                              hint="run `warden aws setup --region REGION` again to re-write it") from None


def save(state: State, project: AwsProject) -> None:
    if project.mode not in MODES:
        raise WardenError(f"unknown AWS registration mode {project.mode!r}", hint="ca or without-ca")
    write_file(path(state), json.dumps(asdict(project), indent=2, sort_keys=True) + "\n")
