"""``lulc sample`` and ``lulc train``: thin commands over :mod:`lulc.training`."""
from __future__ import annotations

import click

from lulc.runtime.cli import handle_errors


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
@click.option("--arch", default="unet", show_default=True, help="Model architecture.")
@click.option("--image", required=True, type=click.Path(), help="Input raster (GeoTIFF/VRT).")
@click.option("--labels", required=True, type=click.Path(), help="Label raster, or vector file with a class column.")
@click.option("--label-column", default="class", show_default=True, help="Class column of a vector label file.")
@click.option("--classes", type=click.Path(), default=None, help="classes.json: ordered class names and colours.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--tile", type=int, default=64, show_default=True, help="Training tile size in px.")
@click.option("--stride", type=int, default=None, help="Tile stride inside a split block (default tile/2).")
@click.option("--split-block", type=int, default=None, help="Spatial split block size in px (default 2 x tile).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=1e-3, show_default=True)
@click.option("--depth", type=int, default=3, show_default=True, help="U-Net poolings.")
@click.option("--width", type=int, default=16, show_default=True, help="Filters of the first level.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle folder.")
@handle_errors
def train(**options):
    """Train a model on IMAGE + LABELS and write a model bundle."""
    from lulc.training.metrics import format_table
    from lulc.training.train import TrainConfig
    from lulc.training.train import train as run_training

    bundle = run_training(TrainConfig(**options))
    metrics = bundle.manifest.provenance["metrics"]["test"]
    click.echo(format_table(metrics))
    click.echo(f"bundle: {bundle.root}")
