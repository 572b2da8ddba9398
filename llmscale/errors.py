"""The one exception type for user mistakes.

Anything raised as `UserError` is shown by the CLI as one line on stderr with exit code 2.
It subclasses ValueError so library callers can catch it the usual way.
"""


class UserError(ValueError):
    """A mistake in the user's input (config, paths, data, flags) with an actionable message."""
