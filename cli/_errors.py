"""Turn bad input into one line on stderr and exit code 2.

Every command of the CLI is wrapped by :func:`cli_errors`. The library raises
:class:`convexrecon.errors.InputError` for bad input; the wrapper also maps the
usual file-system failures (missing file, directory given, no permission) and
errors raised while *reading* a file (:func:`reading`) to the same one-line form::

    error: <message>

No traceback is printed for these. Anything else is a bug and propagates with its
traceback (exit code 1). Output files are written to a temporary file and renamed
by the writers, so an error never leaves a partial output behind.
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import typer

from convexrecon.errors import InputError

__all__ = ["EXIT_BAD_INPUT", "cli_errors", "fail", "one_line", "reading"]

EXIT_BAD_INPUT = 2

F = TypeVar("F", bound=Callable[..., Any])


def one_line(message: str) -> str:
    """Collapse whitespace (newlines included) so a message fits one line."""
    return " ".join(str(message).split())


def fail(message: str) -> None:
    """Raise :class:`InputError` with ``message`` (for checks done in the CLI)."""
    raise InputError(message)


def _report(message: str) -> None:
    """Write ``error: <message>`` as exactly one line on stderr."""
    text = one_line(message) or "unknown error"
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()


def _os_message(exc: OSError) -> str:
    """A one-line description of a file-system error, naming the path."""
    name = exc.filename if exc.filename is not None else ""
    if isinstance(exc, FileNotFoundError):
        return f"{name}: no such file" if name else one_line(str(exc))
    if isinstance(exc, IsADirectoryError):
        return f"{name}: is a directory, expected a file"
    if isinstance(exc, PermissionError):
        return f"{name}: permission denied"
    reason = exc.strerror or str(exc)
    return f"{name}: {reason}" if name else reason


@contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Map any error raised while reading ``path`` to :class:`InputError`.

    Readers of third-party formats (numpy, h5py) raise ``ValueError``,
    ``EOFError``, ``KeyError`` or ``OSError`` for corrupt or truncated files. Inside
    this context they become an ``InputError`` naming the file.
    """
    try:
        yield
    except InputError:
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (ValueError, EOFError, KeyError, OSError) as exc:
        detail = one_line(str(exc)) or type(exc).__name__
        raise InputError(f"{path}: cannot read the file ({detail})") from exc


def cli_errors(func: F) -> F:
    """Decorate a Typer command: bad input -> ``error: ...`` on stderr, exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except InputError as exc:
            _report(str(exc))
        except OSError as exc:
            _report(_os_message(exc))
        except KeyboardInterrupt:
            _report("interrupted")
            raise typer.Exit(code=130) from None
        raise typer.Exit(code=EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]
