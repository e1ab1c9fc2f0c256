"""The options every classifying command shares (``lulc-infer``, ``lulc batch``,
``lulc suggest-samples``, ``lulc clean``), and the logging set-up of the ``-v/-q`` flags.

They fill :class:`~lulc.runtime.options.InferOptions` by name, so a new option is added here
and there, and every command has it.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # the options module loads the runtime: `lulc --help` does without it
    from lulc.runtime.options import InferOptions

F = TypeVar("F", bound=Callable[..., Any])


def configure_logging(verbosity: int) -> None:
    """Log level from the counted -v/-q flags (WARNING by default), set once for the whole process."""
    level = max(10, 30 - 10 * verbosity)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)  # also when a command's own -v/-q comes after the group's


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
