"""The ``convexrecon`` command line: a thin shell that parses, loads, calls the API
and saves. No algorithm lives here.

Commands: ``recon`` (reconstruct a k-space file), ``demo`` (bundled data, figures
and metrics), ``info`` (describe a data file), ``problems`` (the named problem
instances) and ``version``. Bad input gives one ``error: ...`` line on stderr and
exit code 2 (see :mod:`cli._errors`). No arguments at all print the help on stdout
and exit with code 0, whatever the click or typer version (their built-in
``no_args_is_help`` exits with 0 or 2 depending on the version, so it is not used).
"""

from __future__ import annotations

import typer

from convexrecon.cli._errors import cli_errors
from convexrecon.cli.demo_cmd import DEMO_EPILOG, demo
from convexrecon.cli.info_cmd import INFO_EPILOG, info, problems
from convexrecon.cli.layerwise_cmd import (LAYERWISE_EPILOG, evaluate_cmd, train_e2e_cmd,
                                           train_layerwise_cmd)
from convexrecon.cli.recon_cmd import RECON_EPILOG, recon
from convexrecon.cli.deq_cmd import TRAIN_DEQ_EPILOG, TRAIN_UNROLLED_EPILOG, train_deq, train_unrolled

__all__ = ["app", "main"]

APP_HELP = """\
convexrecon: convex-first MR image reconstruction.

Reconstruct undersampled multi-coil k-space with L1-wavelet (FISTA), CG-SENSE, \
TV (PDHG), GRAPPA, zero filling or a trained network; train networks greedily \
layer by layer with convex programs (train-layerwise), as deep equilibria \
(train-deq) or unrolled (train-unrolled, train-e2e); describe data files; run \
the bundled demo.
"""

APP_EPILOG = """\
Start with [bold]convexrecon demo[/bold] (no arguments needed), then
[bold]convexrecon recon --help[/bold] or [bold]convexrecon train-layerwise --layers 5[/bold]
(about 5 minutes on 2 CPU cores). Bad input exits with code 2 and one
'error: ...' line on stderr.
"""

app = typer.Typer(
    name="convexrecon",
    help=APP_HELP,
    epilog=APP_EPILOG,
    no_args_is_help=False,
    invoke_without_command=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)



@app.callback()
def _root(ctx: typer.Context) -> None:
    # no subcommand: the help on stdout, exit code 0 (a request for help, not an error)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


app.command("recon", epilog=RECON_EPILOG)(recon)
app.command("demo", epilog=DEMO_EPILOG)(demo)
app.command("info", epilog=INFO_EPILOG)(info)
app.command("problems")(problems)
app.command("train-deq", epilog=TRAIN_DEQ_EPILOG)(train_deq)
app.command("train-unrolled", epilog=TRAIN_UNROLLED_EPILOG)(train_unrolled)
app.command("train-layerwise", epilog=LAYERWISE_EPILOG)(train_layerwise_cmd)
app.command("train-e2e")(train_e2e_cmd)
app.command("evaluate")(evaluate_cmd)


@app.command("version")
@cli_errors
def version() -> None:
    """Print the version."""
    from convexrecon import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``convexrecon`` console script."""
    from convexrecon.perf import retain_freed_memory
    retain_freed_memory()  # long solver runs: no page faults on reused temporaries
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
