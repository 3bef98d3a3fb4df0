"""`warden aws setup`: the account's ATS data endpoint, and how AWS IoT learns the fleet's certificates.

It records its findings in <state>/aws.json (project.py) and changes nothing else in AWS than the
CA registration: things, certificates and policies are sync.py's.

Two ways to let AWS IoT accept the fleet's certificates:
- `ca` (the default): the fleet CA is registered (ACTIVE, auto-registration off) with a
  verification certificate whose CN is the account's registration code, signed by the CA
  (pki.issue_verification_cert): AWS's proof that we hold the CA's key. Device certificates are
  then registered with that CA.
- `without-ca` (multi-account registration): no CA in AWS; each certificate is registered on
  its own. For a CA that is registered in another account or region already, or a fleet that
  does not want its CA known to AWS.
Running setup again re-uses a CA it registered (by the id it recorded) and re-activates it.
"""
from __future__ import annotations

from ..fleet import pki
from ..state import State
from .client import Aws, AwsNotFound
from .project import AwsProject, load, path, save

ATS = "iot:Data-ATS"


def setup(state: State, region: str, profile: str | None = None, *, without_ca: bool = False,
          endpoint_url: str | None = None, aws: Aws | None = None) -> tuple:
    """(AwsProject, [lines saying what was done])."""
    from ..policy.aws import check_region_account

    ca_cert, _ca_key = pki.load_ca(state)      # no CA: PkiError says run `warden pki init`
    aws = aws or Aws(region, profile, endpoint_url)
    account = aws.account()
    check_region_account(region, account)
    endpoint = aws.call("describe_endpoint", endpointType=ATS)["endpointAddress"]
    done = [f"account {account}, region {region}", f"ATS data endpoint: {endpoint} (port 8883)"]
    previous = None
    if path(state).exists():
        try:
            previous = load(state)
        except Exception:   # an unreadable record is simply re-written
            previous = None
    project = AwsProject(region=region, account=account, endpoint=endpoint, profile=profile,
                         endpoint_url=endpoint_url, mode="without-ca" if without_ca else "ca")
    if without_ca:
        done.append("multi-account registration: each certificate is registered without a CA")
    else:
        project.ca_certificate_id = _register_ca(state, aws, ca_cert, previous, region, done)
    save(state, project)
    done.append(f"recorded in {path(state)}")
    return project, done


def _register_ca(state, aws, ca_cert, previous, region, done) -> str:
    ca_id = pki.fingerprint(ca_cert)    # AWS's id of a certificate is the SHA-256 of its DER
    known = previous.ca_certificate_id if previous and previous.region == region else None
    for candidate in filter(None, (known, ca_id)):
        try:
            desc = aws.call("describe_ca_certificate", certificateId=candidate)["certificateDescription"]
        except AwsNotFound:
            continue
        if pki.fingerprint(pki.load_cert(desc["certificatePem"].encode())) != ca_id:
            continue
        if desc.get("status") != "ACTIVE":
            aws.call("update_ca_certificate", certificateId=candidate, newStatus="ACTIVE")
            done.append(f"fleet CA {candidate[:12]}... re-activated in AWS IoT")
        else:
            done.append(f"fleet CA {candidate[:12]}... already registered and ACTIVE")
        return candidate
    code = aws.call("get_registration_code")["registrationCode"]
    verification = pki.issue_verification_cert(state, code)
    out = aws.call("register_ca_certificate",
                   caCertificate=pki.cert_pem(ca_cert).decode(),
                   verificationCertificate=pki.cert_pem(verification).decode(),
                   setAsActive=True, allowAutoRegistration=False)
    done.append(f"fleet CA registered with AWS IoT as {out['certificateId'][:12]}... (ACTIVE, "
                "verified by a certificate for the registration code)")
    return out["certificateId"]
