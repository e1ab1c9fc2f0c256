"""``lulc clean`` and ``lulc vectorize``: thin commands over :mod:`lulc.runtime.postprocess.clean`."""
from __future__ import annotations

from typing import Any

import click

from lulc.runtime.cli_errors import handle_errors
from lulc.runtime.cli_options import post_options


@click.command("clean")
@click.argument("map_path", metavar="MAP", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The cleaned map (COG).")
@click.option("--vector", type=click.Path(), default=None, metavar="OUT.gpkg", help="Also write its regions as polygons.")
@click.option("--simplify", type=click.FloatRange(min=0), default=0.0, help="Simplify --vector polygons (map units).")
@click.option("--quicklook", type=click.Path(), default=None, help="Also write a PNG preview of the cleaned map.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files (never the input).")
@post_options
@handle_errors
def clean(map_path: str, output: str, vector: str | None, simplify: float, quicklook: str | None, overwrite: bool,
          **options: Any) -> None:
    """Apply a minimum mapping unit, a majority filter or Bayesian smoothing (which needs the
    map's probability bands) to the class map MAP, as lulc-infer's options of the same names do."""
    from lulc.runtime.postprocess.clean import clean_map
    from lulc.runtime.postprocess.stage import PostOptions

    merged = clean_map(map_path, output, PostOptions(**options), vector, simplify, overwrite, quicklook)
    click.echo(f"wrote {output} ({merged} regions below the minimum mapping unit merged)", err=True)


@click.command("vectorize")
@click.argument("map_path", metavar="MAP", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="GeoPackage of polygons.")
@click.option("--simplify", type=click.FloatRange(min=0), default=0.0, help="Simplification tolerance (map units).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@handle_errors
def vectorize(map_path: str, output: str, simplify: float, overwrite: bool) -> None:
    """One polygon per region of the class map MAP (4-connected), with its class, class name,
    pixel count and area; regions crossing strips stay whole; memory stays bounded."""
    from lulc.runtime.postprocess.clean import vectorize_map

    count = vectorize_map(map_path, output, simplify, overwrite)
    click.echo(f"wrote {count} polygons to {output}", err=True)
