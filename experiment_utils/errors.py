"""The one exception type for user mistakes, so entry points can report them in a single line."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad config value, missing file, wrong checkpoint, no network).

    Its message is one line that says what is wrong and how to fix it; entry points print it as
    ``error: <message>`` and exit with status 2 instead of showing a traceback.
    """
