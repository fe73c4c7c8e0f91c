"""Errors raised by convexrecon.

Every check on user input raises :class:`InputError`, a ``ValueError`` whose
message names the argument, what was expected and what was given. The CLI turns it
into one line on stderr and exit code 2.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input: wrong shape, dtype, non-finite data, unknown name, bad file."""
