"""Fixtures device tests can ask for with `# devtest: needs=...` (besides tests/conftest.py's)."""
from support.configvectors import config_vectors  # noqa: F401  (signed remote-settings commands)
from support.otavectors import ota_vectors  # noqa: F401  (signed OTA updates and a template twin flash)
from support.awsroots import aws_identity  # noqa: F401  (an identity trusting Amazon's roots)
