"""The ``lulc`` command group and the ``lulc-infer`` script.

Subcommands are registered as ``lulc.commands`` entry points by the folder that owns the
work (runtime, training, export), so this group never imports training or export code.
Commands are thin: parse options, import the library lazily, call it.
"""
from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from lulc.runtime import __version__
from lulc.runtime.core.errors import LulcError, SettingError

if TYPE_CHECKING:
    from lulc.runtime.options import InferOptions

# TensorFlow's C++ start-up chatter would drown our own messages (set it to 0 to see it);
# this must happen before a subcommand's module can import TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def configure_logging(verbosity: int) -> None:
    level = max(10, 30 - 10 * verbosity)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)  # also when a command's own -v/-q comes after the group's


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn user mistakes into one line on stderr, no traceback: a wrong option (SettingError)
    is a usage error, exit code 2, like a wrong type click itself catches; any other LulcError
    (bad data, a wrong bundle, an unwritable output) exits 1.

    SIGTERM (a scheduler or `kill` stopping the run) is handled like Ctrl-C: the command
    stops cleanly and says what, if anything, can be resumed.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            return func(*args, **kwargs)
        except SettingError as exc:  # an option no run can use: a usage error, exit code 2
            if exc.hint is None:
                raise click.UsageError(exc.problem) from None
            raise click.BadParameter(exc.problem, param_hint=exc.hint) from None
        except LulcError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; no output was written") from None
        except MemoryError:
            raise click.ClickException("out of memory; use smaller tiles or blocks (--tile, --block-px)") from None

    return wrapper


class PluginGroup(click.Group):
    """A group whose commands come from ``lulc.commands`` entry points, loaded on demand."""

    def _plugins(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group="lulc.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = self._plugins().get(name)
        if ep is None:
            return None
        try:
            return ep.load()
        except ImportError as exc:
            missing = exc.name or str(exc)
            return _broken_command(name, f"`lulc {name}` needs {missing}: install the extra, e.g. `pip install 'lulc[train,export]'`")


def _broken_command(name: str, message: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def broken() -> None:
        raise click.ClickException(message)

    return broken


@click.group(cls=PluginGroup)
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
@click.option("-q", "--quiet", count=True, help="Less log output (repeatable).")
@click.version_option(__version__, prog_name="lulc")
def main(verbose: int, quiet: int) -> None:
    """lulc: land-use / land-cover classification for satellite rasters."""
    configure_logging(verbose - quiet)


#: what to do to a finished map (lulc-infer, lulc batch, lulc clean); they fill InferOptions /
#: PostOptions by name
POST_OPTIONS = [
    click.option("--mmu", type=float, default=None, metavar="HECTARES",
                 help="Minimum mapping unit: merge 8-connected regions smaller than this into their largest neighbour "
                      "(as GDAL's sieve on the whole map)."),
    click.option("--mmu-px", type=int, default=None, metavar="N", help="The minimum mapping unit in pixels."),
    click.option("--majority", type=click.IntRange(min=1), default=None, metavar="RADIUS",
                 help="Majority (modal) filter over a (2 RADIUS + 1)² px window."),
    click.option("--smooth", type=click.Choice(["bayes"]), default=None,
                 help="Bayesian smoothing of the class probabilities (sits' method) before the classes are chosen."),
    click.option("--smoothness", type=float, default=20.0, show_default=True, help="Prior variance of --smooth bayes."),
    click.option("--smooth-window", type=int, default=7, show_default=True, help="Window of --smooth bayes, px (odd)."),
]

#: options every classifying command takes, in --help order; they fill InferOptions by name
RUN_OPTIONS = [
    click.option("--backend", type=click.Choice(["auto", "trt", "onnx", "keras"]), default="auto", show_default=True),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                 help="Where the model runs (auto: a GPU when the backend has one)."),
    click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "int8"]), default="auto", show_default=True,
                 help="Model precision (auto: int8 on CPU where the bundle has it, the engine or fp16 on GPU, else fp32)."),
    click.option("--scene-stride", type=click.IntRange(min=1), default=None, metavar="N",
                 help="Scene bundles: one class per N px cell, down to 1, from the patch window around it "
                      "(default: one per patch; needs `lulc export --target onnx --scene-stride N`)."),
    click.option("--ensemble", multiple=True, type=click.Path(), metavar="BUNDLE",
                 help="Average the class probabilities with this bundle's (repeatable; same bands and classes)."),
    click.option("--tta", type=click.Choice(["flips", "d4"]), default=None,
                 help="Test-time augmentation: average the model over flipped (4) or flipped and rotated (8) tiles."),
    *POST_OPTIONS,
    click.option("--tile", type=click.IntRange(min=1), default=None, help="Tile size in px (default: the bundle's)."),
    click.option("--overlap", type=click.IntRange(min=0), default=None, help="Tile overlap in px (default: the bundle's)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=None,
                 help="Tiles per model call (default: about 0.25 MPix per call)."),
    click.option("--block-px", type=click.IntRange(min=1), default=1024, show_default=True,
                 help="Side of the blocks streamed through memory (and the unit of --resume)."),
    click.option("--band-names", type=click.Choice(["strict", "auto", "ignore"]), default="strict", show_default=True,
                 help="Input band names must equal the model's (strict), may be generic like B1..Bn (auto), "
                      "or are not checked (ignore)."),
    click.option("--probabilities", is_flag=True, help="Add one uint8 probability band per class (0..254)."),
    click.option("--confidence", is_flag=True, help="Add a uint8 max-probability band (0..254)."),
    click.option("--uncertainty", type=click.Choice(["entropy", "margin", "least"]), default=None,
                 help="Add a uint8 uncertainty band, 0 (sure) .. 254 (unsure): normalised entropy, 1 - margin "
                      "between the two most likely classes, or 1 - the top probability."),
    click.option("--overwrite", is_flag=True, help="Replace existing output files (never an input, a folder or the bundle)."),
    click.option("--dask", default=None, metavar="ADDRESS",
                 help="Classify on a Dask cluster: local, local:N (N worker processes) or a scheduler address "
                      "(tcp://host:8786); needs `pip install 'lulc[dask]'`."),
    click.option("--progress/--no-progress", default=True, show_default=True),
    click.option("-v", "--verbose", count=True, help="More log output (repeatable)."),
    click.option("-q", "--quiet", count=True, help="Less log output (repeatable)."),
]


def run_options(func: F) -> F:
    """Add :data:`RUN_OPTIONS` to a command."""
    for option in reversed(RUN_OPTIONS):
        func = option(func)
    return func


def post_options(func: F) -> F:
    """Add :data:`POST_OPTIONS` to a command."""
    for option in reversed(POST_OPTIONS):
        func = option(func)
    return func


def infer_options(verbose: int, quiet: int, **options: Any) -> InferOptions:
    """InferOptions from the command's options (and its own -v/-q applied)."""
    from lulc.runtime.options import InferOptions

    if verbose or quiet:
        configure_logging(verbose - quiet)
    return InferOptions(**options)


@click.command("infer")
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Output class-map GeoTIFF (COG).")
@click.option("--quicklook", type=click.Path(), default=None, help="Also write a PNG preview of the class map.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last finished block row.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON run summary on stdout.")
@click.option("--vector", type=click.Path(), default=None, metavar="OUT.gpkg",
              help="Also write the map's regions as polygons (class, name, pixels, hectares) to a GeoPackage.")
@click.option("--simplify", type=click.FloatRange(min=0), default=0.0, help="Simplify --vector polygons (map units).")
@run_options
@handle_errors
def infer(bundle: str, inputs: tuple[str, ...], output: str, as_json: bool, **options: Any) -> None:
    """Classify INPUTS with the model BUNDLE and write a georeferenced class map.

    Bundle folders given before the rasters (BUNDLE B2 B3 IMAGE) form an ensemble whose class
    probabilities are averaged.

    INPUTS is one raster, or several co-registered rasters whose bands are stacked in the
    order given (as they were given to `lulc train --image`).
    """
    from lulc.runtime.infer import run_inference, summary_json

    # leading INPUTS that are bundle folders are ensemble members: lulc-infer B1 B2 IMAGE
    members = []
    while len(inputs) > 1 and os.path.isfile(os.path.join(inputs[0], "bundle.json")):
        members.append(inputs[0])
        inputs = inputs[1:]
    options["ensemble"] = (*members, *options["ensemble"])
    summary = run_inference(bundle, inputs, output, infer_options(**options))
    if as_json:
        click.echo(summary_json(summary))
    else:
        click.echo(f"wrote {summary.output} ({summary.pixels / 1e6:.2f} MPix, {summary.mpix_per_s:.2f} MPix/s, "
                   f"{summary.device}, {summary.precision})", err=True)


@click.command("batch")
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder for the maps: OUTDIR/<input stem>.tif, or OUTDIR/<STAC item id>.tif.")
@run_options
@handle_errors
def batch(bundle: str, inputs: tuple[str, ...], output: str, **options: Any) -> None:
    """Classify many INPUTS with BUNDLE, one map each: rasters, globs ('tiles/*.tif', quoted) or
    STAC Item / ItemCollection JSON files or URLs whose assets carry the bundle's bands.

    A map already in OUTDIR from the same model is kept, so a rerun finishes an interrupted
    batch. An input that fails is one line and does not stop the others; the exit code is 1
    when any failed.
    """
    from lulc.runtime.batch import run_batch

    result = run_batch(bundle, list(inputs), output, infer_options(**options))
    for line in result.failures:
        click.echo(f"Error: {line}", err=True)
    kept = f" ({result.kept} kept from an earlier run)" if result.kept else ""
    click.echo(f"{len(result.maps)} of {result.total} maps written to {output}{kept}", err=True)
    if result.failures:
        raise SystemExit(1)


def infer_main() -> None:
    """Entry point of the ``lulc-infer`` script (same command as ``lulc infer``)."""
    configure_logging(0)
    infer.main(prog_name="lulc-infer")
