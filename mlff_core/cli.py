"""The `mlff` command: data, training, evaluation, engines and reports.

Errors the user can fix (bad files, bad options) print as one line, `mlff: error: ...`, and exit
non-zero; only bugs show a traceback.
"""

from __future__ import annotations

import os
import sys

import click

from mlff_core import __version__
from mlff_core.commands.active_learn import active_learn
from mlff_core.commands.asteroid import asteroid
from mlff_core.commands.data import data
from mlff_core.commands.demo import demo
from mlff_core.commands.evaluate import evaluate
from mlff_core.commands.finetune import finetune
from mlff_core.commands.import_model import import_command
from mlff_core.commands.md import md
from mlff_core.commands.report import report
from mlff_core.commands.train import export, train
from mlff_core.errors import MLFFError


class _PluginGroup(click.Group):
    """A group that also offers the subcommands bridges register in the `mlff.commands`
    entry-point group. They are loaded only when the command line asks for them, so importing
    `mlff_core` never imports a bridge (dependencies point one way: bridges -> mlff_core)."""

    @staticmethod
    def _entries() -> dict:
        from importlib.metadata import entry_points

        return {entry.name: entry for entry in entry_points(group="mlff.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entries()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        entry = self._entries().get(name)
        if entry is None:
            return None
        try:
            return entry.load()
        except ImportError:  # a bridge whose engine is not installed
            return None


@click.group(cls=_PluginGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mlff")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Machine-learning force fields in OpenMM, LAMMPS and ASE, with guardrails.

    \b
    Start with:
      mlff demo -o demo-output          the whole pipeline on a small default
      mlff data generate --help         make labelled data with a level of theory
    """
    from mlff_core.training.parallel import launched_processes

    if launched_processes() > 1 and ctx.invoked_subcommand != "train":
        raise click.UsageError(f"mlff {ctx.invoked_subcommand} runs in one process; of the "
                               "commands, only mlff train runs data-parallel under torchrun")


cli.add_command(data)
cli.add_command(train)
cli.add_command(finetune)
cli.add_command(active_learn)
cli.add_command(asteroid)
cli.add_command(export)
cli.add_command(import_command)
cli.add_command(evaluate)
cli.add_command(report)
cli.add_command(md)
cli.add_command(demo)


def _fail(message: str, code: int) -> None:
    rank = os.environ.get("RANK", "0") if os.environ.get("WORLD_SIZE", "1") != "1" else "0"
    who = "mlff" if rank == "0" else f"mlff (rank {rank})"  # under torchrun, rank 0 says it plainly
    click.echo(f"{who}: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        code = cli.main(args=argv, prog_name="mlff", standalone_mode=False)
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(f"{exc.format_message()}{where}", exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except MLFFError as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        _fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", 1)
    except (KeyboardInterrupt, click.Abort):
        click.echo("mlff: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
