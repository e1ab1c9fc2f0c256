"""``lulc stack`` and ``lulc change``: thin commands over :mod:`lulc.runtime.tools.timestack` and
:mod:`lulc.runtime.tools.change` (no TensorFlow: both run on the edge install)."""
from __future__ import annotations

import click

from lulc.runtime.cli_errors import handle_errors


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command("stack")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Stack folder to write.")
@click.option("--bands", default=None, help="Comma-separated bands to keep, in order (default: all but the mask).")
@click.option("--mask-band", default=None, help="Per-date cloud/validity band, e.g. fmask.")
@click.option("--mask-valid", default="0,1", show_default=True, help="Mask values that mean a clear observation (Fmask: 0 land, 1 water).")
@click.option("--align", is_flag=True, help="Resample dates that are off the first date's grid onto it.")
@click.option("--nodata", type=float, default=None, help="Nodata value for masked pixels (default: the inputs').")
@click.option("--overwrite", is_flag=True, help="Replace an existing stack folder.")
@handle_errors
def stack(inputs: tuple[str, ...], output: str, bands: str | None, mask_band: str | None, mask_valid: str, align: bool,
          nodata: float | None, overwrite: bool) -> None:
    """Stack dated rasters (files or per-date folders of band files, or one folder of them) into
    one VRT per band over time and a date-major stack.vrt for `lulc train` and `lulc-infer`."""
    from lulc.runtime.tools.timestack import build_stack

    valid = tuple(int(v) for v in _names(mask_valid) or ())
    info = build_stack(list(inputs), output, _names(bands), mask_band, valid, align, nodata, overwrite)
    click.echo(f"{len(info.dates)} dates ({info.dates[0]} .. {info.dates[-1]}) x {len(info.bands)} bands "
               f"({', '.join(info.bands)}) -> {info.path}")


@click.command("change")
@click.argument("map_a", type=click.Path())
@click.argument("map_b", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Transition raster (code = from * K + to).")
@click.option("--table", type=click.Path(), default=None, help="CSV of hectares per transition (default: OUTPUT with .csv).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@handle_errors
def change(map_a: str, map_b: str, output: str, table: str | None, overwrite: bool) -> None:
    """From-to change between class maps MAP_A (before) and MAP_B (after) of the same class list."""
    from lulc.runtime.tools.change import detect_change

    summary = detect_change(map_a, map_b, output, table, overwrite)
    changed = sum(ha for f, t, _, ha in summary.rows if f != t)
    total = sum(ha for *_, ha in summary.rows)
    click.echo(f"{changed:.2f} of {total:.2f} ha changed -> {summary.output}, {summary.table}")
