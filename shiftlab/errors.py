"""Errors meant for people: what was expected, what was found, what to do next."""

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hydra
from hydra.errors import InstantiationException


class ShiftlabError(Exception):
    """A problem the user can fix (bad input, missing data, bad configuration).

    Entry points print its message and exit non-zero without a traceback.
    """


def instantiate(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a ShiftlabError through unwrapped.

    Hydra wraps every exception raised by a constructor in an InstantiationException, which
    would turn a clear message about the user's data into a config-key error.
    """
    try:
        return hydra.utils.instantiate(config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ShiftlabError):
            raise error.__cause__ from None
        raise


@contextmanager
def exit_on_user_error(stop: bool = True) -> Iterator[None]:
    """Entry points: a ShiftlabError becomes ``error: <message>`` on stderr and exit status 2.

    ``stop=False`` (a job of a multirun) prints the message and goes on: exiting would end the
    whole sweep, every run after this one included. The sweep reports the failed runs at its end.
    """
    try:
        yield
    except ShiftlabError as error:
        print(f"error: {error}", file=sys.stderr)
        if stop:
            sys.exit(2)


def setting_number(value: Any, setting: str, expected: str) -> float:
    """A setting (``setting``, e.g. ``shift.alpha``) as a finite number, or a ShiftlabError that
    says what is expected."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ShiftlabError(f"{setting}={value!r}: expected a number, {expected}.")
    return number
