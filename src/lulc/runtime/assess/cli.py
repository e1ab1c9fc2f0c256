"""``lulc assess``, ``lulc sample-design`` and ``lulc suggest-samples``: thin commands over
:mod:`lulc.runtime.assess`."""
from __future__ import annotations

import json
from typing import Any

import click

from lulc.runtime.cli_errors import handle_errors
from lulc.runtime.cli_options import infer_options, run_options


@click.command("assess")
@click.argument("map_path", metavar="MAP", type=click.Path())
@click.argument("reference", type=click.Path())
@click.option("--class-field", default=None, help="Field of REFERENCE holding each sample's class (default: class, "
                                                  "reference, label or ref_class, whichever exists).")
@click.option("--strata", type=click.Path(), default=None,
              help="Raster of the strata the sample was drawn on, where they are not the map's classes "
                   "(Stehman 2014 estimator).")
@click.option("--crs", default=None, help="CRS of a CSV reference's x/y (default: the map's); overrides a file's own.")
@click.option("--x-field", default="x", show_default=True, help="CSV column of x.")
@click.option("--y-field", default="y", show_default=True, help="CSV column of y.")
@click.option("--labels-from", type=click.Path(), default=None,
              help="Read each point's reference class from this label raster instead of a field (a reference "
                   "layer interpreted at a designed sample).")
@click.option("--json", "json_out", type=click.Path(), default=None, help="Also write the figures to this JSON file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json file.")
@handle_errors
def assess(map_path: str, reference: str, class_field: str | None, strata: str | None, crs: str | None, x_field: str,
           y_field: str, labels_from: str | None, json_out: str | None, overwrite: bool) -> None:
    """Accuracy and class areas of MAP, with standard errors and 95 % confidence intervals,
    estimated from the reference sample REFERENCE (points or polygons in a GeoPackage,
    Shapefile, GeoJSON or CSV with x/y; or a label raster on the map's grid).

    The estimator is Olofsson et al. (2014) for a sample stratified by the map's classes, or
    Stehman (2014) with --strata; both assume a stratified random sample of pixels.
    """
    from lulc.runtime.assess.assess import assess_map, format_table, to_json, write_json

    result = assess_map(map_path, reference, class_field, strata, crs, x_field, y_field, labels_from)
    for note in result.tally.notes:
        click.echo(note, err=True)
    click.echo(format_table(result))
    if json_out:
        write_json(to_json(result), json_out, [map_path, reference, *(p for p in (strata, labels_from) if p)], overwrite)


@click.command("sample-design")
@click.argument("map_path", metavar="MAP", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Points to write (.gpkg, .shp, .geojson or .csv).")
@click.option("--target-se", type=float, default=0.01, show_default=True,
              help="Target standard error of overall accuracy (sets the sample size).")
@click.option("--expected-ua", multiple=True, metavar="[CLASS=]FRACTION",
              help="Expected user's accuracy: one value for all classes, or CLASS=VALUE (repeatable; others 0.8).")
@click.option("--allocation", type=click.Choice(["min-per-class", "proportional", "equal"]), default="min-per-class",
              show_default=True, help="Samples per class: proportional to area above a floor, by area, or equal.")
@click.option("--min-per-class", type=click.IntRange(min=0), default=50, show_default=True,
              help="The floor of --allocation min-per-class.")
@click.option("-n", "--samples", type=click.IntRange(min=1), default=None, help="Total samples (instead of --target-se).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@handle_errors
def sample_design(map_path: str, output: str, target_se: float, expected_ua: tuple[str, ...], allocation: str,
                  min_per_class: int, samples: int | None, seed: int, overwrite: bool) -> None:
    """Draw a stratified random reference sample of MAP's classified pixels into OUTPUT, with an
    empty `class` column for the interpreter (then `lulc assess MAP OUTPUT`)."""
    from lulc.runtime.assess.design import sample_design as design

    result = design(map_path, output, target_se, list(expected_ua), allocation, min_per_class, samples, seed, overwrite)
    click.echo(result.table())


@click.command("suggest-samples")
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-n", "--samples", type=click.IntRange(min=1), required=True, help="Points to suggest.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Points to write (.gpkg, .shp, .geojson or .csv).")
@click.option("--measure", type=click.Choice(["entropy", "margin", "least"]), default="entropy", show_default=True)
@click.option("--min-distance", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Least distance between points, in the map's units (metres).")
@click.option("--json", "as_json", is_flag=True, help="Print the points as JSON on stdout.")
@run_options
@handle_errors
def suggest_samples(bundle: str, inputs: tuple[str, ...], samples: int, output: str, measure: str, min_distance: float,
                    as_json: bool, overwrite: bool, **options: Any) -> None:
    """The pixels of INPUTS the model BUNDLE is least sure about, spread out, as points to
    label next (active learning)."""
    from lulc.runtime.assess.suggest import suggest_samples as suggest

    points = suggest(bundle, inputs, output, samples, measure, min_distance, infer_options(**options), overwrite)
    if as_json:
        click.echo(json.dumps(points, indent=2))
    click.echo(f"wrote {len(points)} points to {output}", err=True)
