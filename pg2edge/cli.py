"""The `pg2edge` command: one subcommand per job in DESIGN §1.

Every `Pg2EdgeError` becomes one `error: ...` line on stderr and exit code 2;
heavy imports (jax, tensorflow) happen inside the subcommand that needs them.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

import click

from pg2edge.errors import Pg2EdgeError


def _one_line_errors(fn: Callable) -> Callable:
    """Turn pg2edge's typed errors into one line and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Pg2EdgeError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)

    return wrapper


def _planned(name: str, issue: str) -> click.Command:
    """A listed command whose implementation has not landed yet."""

    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                   help=f"(planned, issue {issue}) not implemented yet.", add_help_option=False)
    @click.pass_context
    def cmd(ctx: click.Context) -> None:
        click.echo(f"error: `pg2edge {name}` is not implemented yet (planned in issue {issue})", err=True)
        sys.exit(2)

    return cmd


@click.group()
@click.version_option(package_name="pg2edge")
def main() -> None:
    """pg2edge: PaliGemma 2 -> ONNX / TFLite bundles for phones and single-board computers."""


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@_one_line_errors
def inspect(checkpoint: str) -> None:
    """Print a checkpoint's format, variant, parameter count and dtypes."""
    from pg2edge.checkpoint import describe

    info = describe(checkpoint)
    shown = dict(info, parameters=f"{info['parameters']:,}",
                 dtypes=", ".join(f"{name} x{count}" for name, count in info["dtypes"].items()),
                 file_bytes=f"{info['file_bytes']:,} ({info['file_bytes'] / 2**20:.1f} MiB)")
    for key, value in shown.items():
        click.echo(f"{key:>19}: {value}")


@main.command()
@click.option("--size", default="tiny", show_default=True)
@click.option("--res", type=int, default=None)
@click.option("--prompt", default="caption en", show_default=True)
@click.option("--max-new-tokens", type=int, default=8, show_default=True)
@_one_line_errors
def demo(size: str, res: int | None, prompt: str, max_new_tokens: int) -> None:
    """Run the JAX model end to end on a random-init variant (until the trained demo lands)."""
    from pg2edge.demo import run_random_init_demo

    run_random_init_demo(size, res, prompt, max_new_tokens)


for _name, _issue in [("convert", "[2/5]"), ("run", "[3/5]"), ("finetune", "[4/5]"),
                      ("tasks", "[4/5]"), ("eval", "[5/5]"), ("bench", "[5/5]")]:
    main.add_command(_planned(_name, _issue))


if __name__ == "__main__":
    main()
