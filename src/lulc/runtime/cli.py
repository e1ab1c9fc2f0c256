"""The ``lulc`` command group and the ``lulc-infer`` script.

Subcommands are registered as ``lulc.commands`` entry points by the folder that owns the
work (runtime, training, export), so this group never imports training or export code.
Commands are thin: parse options, import the library lazily, call it.
"""
from __future__ import annotations

import os
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from lulc.runtime import __version__
from lulc.runtime.cli_errors import handle_errors
from lulc.runtime.cli_options import configure_logging, infer_options, run_options

# TensorFlow's C++ start-up chatter would drown our own messages (set it to 0 to see it);
# this must happen before a subcommand's module can import TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
