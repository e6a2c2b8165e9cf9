"""Errors meant for people: what was expected, what was found, what to do next."""


class ShiftlabError(Exception):
    """A problem the user can fix (bad input, missing data, bad configuration).

    Entry points print its message and exit non-zero without a traceback.
    """
