"""The one exception type the command lines turn into a one-line message."""


class UserError(Exception):
    """Bad input from the user; CLIs print it as one line and exit 2."""
