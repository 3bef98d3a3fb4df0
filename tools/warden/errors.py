"""The base class of every error the host tools raise for a user mistake or a bad environment.

The CLI (warden.cli.common.WardenGroup) prints any WardenError as `error: <message>` with its
`hint` (what to do about it) on the next line, and exits with code 1: never a traceback. So raise
a WardenError subclass, with a hint where there is something to suggest, for anything a user can
fix; a bug in warden itself stays an ordinary exception. This module must not import anything
from warden: every other module may import it.
"""


class WardenError(Exception):
    """An error the user can do something about; `hint` says what (the CLI prints it under the
    message). A subclass may set a default `hint`; the `hint` argument overrides it."""

    hint = None

    def __init__(self, message, hint=None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint
