"""AWS IoT Core as the fleet's broker: `warden aws setup|sync|audit` (docs/aws.md).

client.py   the one way to talk to AWS: boto3 with retry/backoff, call counting, errors as WardenError
project.py  what `setup` recorded (<state>/aws.json): region, account, endpoint, CA or multi-account
rootca.py   the Amazon root CAs a device trusts, picked out of the certifi bundle as DER
setup.py    the ATS endpoint and the fleet CA's registration (or none: multi-account)
sync.py     the plan that makes AWS match the registry, and applying it
audit.py    the registry compared with AWS, as `warden audit` findings
"""
