"""Assertions shared by the CLI tests: a clean exit, or exit code 2 with one
``error: ...`` line on stderr and no traceback."""

from __future__ import annotations


def ok(result) -> None:
    """The command exited 0 (its output in the message otherwise)."""
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def one_line_error(result, *words: str) -> str:
    """Exit 2, one ``error:`` line on stderr naming every one of ``words``, no
    traceback; returns the line."""
    assert result.exit_code == 2, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]
