"""The one way warden talks to AWS: a boto3 IoT client with retry, call counting and clear errors.

It must not decide what to create or change (sync.py and setup.py do): it only carries calls and
turns what goes wrong into a WardenError with what to do about it.

- Throttling (and AWS's own transient failures) is retried here with exponential backoff and full
  jitter, up to `attempts` tries; botocore's own retries are off, so every attempt is one counted
  call and the backoff is ours to test.
- `calls` counts every API call by operation name (a `before-call` hook on the client's events):
  the benchmark and the tests read it to show what a sync costs, and that a sync with nothing to
  change only reads.
- The endpoint: `endpoint_url` (recorded by `warden aws setup --endpoint-url`) or boto3's own
  AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_IOT environment variables; none means AWS itself.
"""
from __future__ import annotations

import random
import re
import time
from collections import Counter

from ..errors import WardenError

THROTTLED = {"ThrottlingException", "TooManyRequestsException", "Throttling", "RequestLimitExceeded",
             "ServiceUnavailableException", "InternalFailureException", "InternalException",
             "SlowDown"}
DENIED = {"AccessDeniedException", "AccessDenied", "UnauthorizedException", "UnauthorizedOperation"}
BAD_CREDENTIALS = {"UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken",
                   "ExpiredTokenException", "InvalidSignatureException", "SignatureDoesNotMatch"}
PERMISSIONS_HINT = "docs/aws.md, 'Permissions', lists the IAM actions warden needs"


class AwsError(WardenError):
    """Something AWS refused or could not do; `code` is AWS's error code when there is one."""

    def __init__(self, message, hint=None, code=None):
        super().__init__(message, hint)
        self.code = code


class AwsNotFound(AwsError):
    pass


class AwsConflict(AwsError):
    """A name already used (ResourceAlreadyExistsException)."""


def _is_write(op: str) -> bool:
    return not op.startswith(("list_", "describe_", "get_"))


class Aws:
    """AWS IoT (and STS, for the account id) in `region`, as `profile` or the default credentials."""

    def __init__(self, region: str, profile: str | None = None, endpoint_url: str | None = None, *,
                 attempts: int = 8, base_delay: float = 0.2, max_delay: float = 10.0, sleep=time.sleep):
        try:
            import boto3
            import botocore.config
            import botocore.exceptions as bex
        except ImportError:
            raise AwsError("boto3 is not installed", hint="make venv (it installs requirements.txt)") from None
        self._bex = bex
        self.region, self.profile, self.endpoint_url = region, profile, endpoint_url
        self.attempts, self.base_delay, self.max_delay, self._sleep = attempts, base_delay, max_delay, sleep
        self.calls = Counter()
        self.retries = 0
        cfg = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                     connect_timeout=10, read_timeout=30, max_pool_connections=4)
        try:
            session = boto3.Session(profile_name=profile, region_name=region)
        except bex.ProfileNotFound:
            raise AwsError(f"AWS profile {profile!r} is not configured",
                           hint="`aws configure --profile NAME`, or leave --profile out for the default") from None
        self.iot = session.client("iot", endpoint_url=endpoint_url, config=cfg)
        self.sts = session.client("sts", endpoint_url=endpoint_url, config=cfg)
        for c in (self.iot, self.sts):
            c.meta.events.register("before-call", self._count)

    def _count(self, model, **_kw):
        self.calls[model.name] += 1

    @property
    def writes(self) -> int:
        """How many calls changed something (every operation that is not List/Describe/Get)."""
        return sum(n for op, n in self.calls.items()
                   if _is_write(re.sub(r"(?<!^)([A-Z])", r"_\1", op).lower()))

    # -- calls ------------------------------------------------------------------------------
    def call(self, op: str, *, service: str = "iot", **params):
        """`op` (boto3's snake_case name) with `params`; throttling retried, errors translated."""
        client = self.iot if service == "iot" else self.sts
        bex = self._bex
        for attempt in range(self.attempts):
            try:
                return getattr(client, op)(**params)
            except bex.ClientError as e:
                err = e.response.get("Error", {})
                code = err.get("Code", "")
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if (code in THROTTLED or status in (429, 503)) and attempt + 1 < self.attempts:
                    self.retries += 1
                    self._sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt)))
                    continue
                raise self._translate(self._action(client, op), code, err.get("Message") or str(e),
                                      status) from None
            except bex.NoCredentialsError:
                raise AwsError("no AWS credentials found",
                               hint="run `aws configure` (or pass --profile / set AWS_PROFILE), or set "
                                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
            except bex.NoRegionError:
                raise AwsError("no AWS region", hint="warden aws setup --region REGION") from None
            except (bex.EndpointConnectionError, bex.ConnectTimeoutError, bex.ReadTimeoutError) as e:
                if attempt + 1 < self.attempts:
                    self.retries += 1
                    self._sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt)))
                    continue
                where = self.endpoint_url or f"AWS IoT in {self.region}"
                raise AwsError(f"cannot reach {where}: {e}",
                               hint="check the network (or the endpoint URL in <state>/aws.json / "
                                    "AWS_ENDPOINT_URL), then run the command again") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _action(client, op) -> str:
        """The IAM action of boto3 method `op`, e.g. iot:RegisterCertificateWithoutCA."""
        name = client.meta.method_to_api_mapping.get(op) or "".join(w.capitalize() for w in op.split("_"))
        return f"{client.meta.service_model.signing_name}:{name}"

    def _translate(self, action, code, message, status) -> AwsError:
        if (not code or code.isdigit()) and "<Code>" in message:
            # an XML error body where JSON was expected (a proxy, or a stand-in such as moto)
            m = re.search(r"<Code>([^<]+)</Code>", message)
            code = m.group(1) if m else code
            m = re.search(r"<Message>([^<]*)</Message>", message)
            message = m.group(1) if m else message
        if code in THROTTLED or status in (429, 503):
            return AwsError(f"AWS kept throttling {action} after {self.attempts} tries ({code})",
                            hint="run the command again in a minute: `warden aws sync` picks up where it stopped; "
                                 "or ask AWS to raise the account's IoT API rate limits", code=code)
        if code in DENIED:
            return AwsError(f"AWS refused {action}: {message}",
                            hint=f"give these credentials' IAM identity the permission {action} ({PERMISSIONS_HINT})",
                            code=code)
        if code in BAD_CREDENTIALS:
            return AwsError(f"AWS does not accept these credentials ({code})",
                            hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile; renew an expired "
                                 "session token (`aws sso login`)", code=code)
        if code == "ResourceAlreadyExistsException":
            return AwsConflict(f"{action}: the name is already used in this AWS account: {message}",
                               hint="rename or delete the other resource in AWS, or use another app name "
                                    "(warden resources are named warden-<app>-...)", code=code)
        if code == "ResourceNotFoundException":
            return AwsNotFound(f"{action}: not found: {message}", code=code)
        if code == "LimitExceededException":
            return AwsError(f"{action}: an AWS IoT quota is reached: {message}",
                            hint="ask AWS to raise the quota (Service Quotas, AWS IoT Core), or remove unused "
                                 "resources", code=code)
        return AwsError(f"{action} failed: {code or status}: {message}", code=code)

    def pages(self, op: str, key: str, **params) -> list:
        """Every item of list operation `op` under `key`, page by page (IoT's older lists page with
        marker/nextMarker, the newer ones with nextToken)."""
        out = []
        kw = dict(params)
        while True:
            page = self.call(op, **kw)
            out.extend(page.get(key, []))
            if page.get("nextMarker"):
                kw["marker"] = page["nextMarker"]
            elif page.get("nextToken"):
                kw["nextToken"] = page["nextToken"]
            else:
                return out

    def account(self) -> str:
        return self.call("get_caller_identity", service="sts")["Account"]
