"""``lulc sample``, ``lulc train`` and ``lulc evaluate``: thin commands over :mod:`lulc.training`."""
from __future__ import annotations

import click
from click.core import ParameterSource

from lulc.runtime.cli import handle_errors

ARCHS = ["unet", "fcn", "scene-cnn", "scene-vgg16", "scene-densenet121"]


@click.command("sample")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for image.tif, labels.tif, classes.json.")
@handle_errors
def sample(output):
    """Write the built-in sample: real Sentinel-2 (13 bands) with OpenStreetMap land-use labels."""
    from lulc.training.sampledata import build_sample

    paths = build_sample(output)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@click.command("train")
@click.argument("config_file", required=False, type=click.Path(dir_okay=False))
@click.option("--arch", default="unet", show_default=True, type=click.Choice(ARCHS), help="Model architecture.")
@click.option("--image", multiple=True, type=click.Path(), help="Input raster (GeoTIFF/VRT); repeat to stack several.")
@click.option("--labels", type=click.Path(), help="Label raster, or vector file (GeoPackage/Shapefile/GeoJSON).")
@click.option("--data", type=click.Path(), help="EuroSAT-layout folder (one sub-folder of patches per class) instead of --image/--labels.")
@click.option("--label-column", default="class", show_default=True, help="Class column of a vector label file.")
@click.option("--classes", type=click.Path(), default=None, help="classes.json: ordered class names and colours.")
@click.option("--aoi", type=click.Path(), default=None, help="Vector area of interest: labels outside it are ignored.")
@click.option("--align", is_flag=True, help="Warp rasters that are not on the first image's grid onto it.")
@click.option("--indices", default="", help="Derived bands to append, e.g. ndvi,ndwi,ndbi.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--tile", type=int, default=64, show_default=True, help="Segmentation tile / scene patch size in px.")
@click.option("--stride", type=int, default=None, help="Tile stride inside a split block (default tile/2).")
@click.option("--split-block", type=int, default=None, help="Spatial split block size in px (default 2 x tile).")
@click.option("--patch-rule", type=click.Choice(["majority", "centre"]), default="majority", show_default=True,
              help="Label of a scene patch: its majority class or its centre pixel.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=1e-3, show_default=True)
@click.option("--depth", type=int, default=3, show_default=True, help="Poolings of unet/fcn/scene-cnn.")
@click.option("--width", type=int, default=16, show_default=True, help="Filters of the first level.")
@click.option("--weights", type=click.Path(), default=None, help="Local pretrained backbone weights (.h5) for scene-vgg16/-densenet121.")
@click.option("--freeze-backbone", is_flag=True, help="Train only the classifier head (fine-tuning phase 1).")
@click.option("--class-weights", default="none", show_default=True, help="balanced, none, or a JSON file of weights.")
@click.option("--brightness", type=float, default=0.0, show_default=True, help="Brightness jitter: scale reflectance by 1 +- this.")
@click.option("--patience", type=int, default=5, show_default=True, help="Early stopping: epochs without better val loss (0: off).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle folder (and a leftover checkpoint).")
@click.pass_context
@handle_errors
def train(ctx, config_file, **options):
    """Train a model and write a model bundle. Settings come from CONFIG_FILE (YAML), overridden by flags."""
    from lulc.training.config import build_config
    from lulc.training.metrics import format_table
    from lulc.training.train import train as run_training

    given = {k: v for k, v in options.items()
             if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    if not config_file:  # without a file, the flag defaults are the settings
        given = {**options, **given}
    given["image"] = list(given["image"]) if "image" in given else given.get("image")
    cfg, record = build_config(config_file, {k: v for k, v in given.items() if v is not None})
    bundle = run_training(cfg, record)
    click.echo(format_table(bundle.manifest.provenance["metrics"]["test"]))
    click.echo(f"bundle: {bundle.root}")


@click.command("evaluate")
@click.argument("bundle", type=click.Path())
@click.option("--image", multiple=True, type=click.Path(), help="Raster(s) to evaluate on (default: the training data).")
@click.option("--labels", type=click.Path(), help="Labels for --image (raster or vector).")
@click.option("--data", type=click.Path(), help="EuroSAT-layout folder to evaluate a scene bundle on.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "val", "train", "all"]),
              help="Which split of the data; 'all' for data the model never saw.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Write metrics.json/confusion.png here instead of into the bundle.")
@handle_errors
def evaluate(bundle, image, labels, data, split, output):
    """Overall accuracy, kappa, per-class F1 and the confusion matrix of BUNDLE on held-out data."""
    from lulc.training.evaluate import evaluate_bundle
    from lulc.training.metrics import format_table

    metrics = evaluate_bundle(bundle, list(image) or None, labels, data, split, output)
    click.echo(format_table(metrics))
