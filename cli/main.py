"""The convexrecon command line (placeholder until the CLI lands)."""

from __future__ import annotations

import typer

app = typer.Typer(help="convexrecon: convex-first MR image reconstruction.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the version."""
    from convexrecon import __version__

    typer.echo(__version__)


def main() -> None:
    app()
