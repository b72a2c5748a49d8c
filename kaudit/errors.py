"""Errors the CLI reports in one line with exit status 2."""


class UsageError(Exception):
    """Bad input from the user: a missing tree, an unreadable rule file..."""
