"""User-facing errors."""


class OwlError(Exception):
    """A problem the user can fix: bad flag, missing model or data.

    The message is one line naming the bad value and what is allowed. The CLI prints it
    without a traceback and exits with status 2.
    """
