"""``lulc simulate`` and ``lulc train-temporal``: thin commands over :mod:`lulc.training.simulate`
and :mod:`lulc.training.timeseries`."""
from __future__ import annotations

import click

from lulc.runtime.cli import handle_errors


@click.command("simulate")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for dates/, stack/, labels.tif, classes.json.")
@click.option("--size", type=int, default=96, show_default=True, help="Scene height and width in px.")
@click.option("--dates", "n_dates", type=int, default=12, show_default=True, help="Number of dates, March to November.")
@click.option("--like", type=click.Path(), default=None, help="Copy the dates and band names of this stack (e.g. the Landsat one).")
@click.option("--seed", type=int, default=0, show_default=True)
@handle_errors
def simulate(output, size, n_dates, like, seed):
    """Write a SIMULATED labelled time series (phenology-driven spectra, clouds) and its stack."""
    from lulc.training.simulate import season_dates, simulate_series

    paths = simulate_series(output, size, size, season_dates(n_dates), like=like, seed=seed)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@click.command("train-temporal")
@click.option("--arch", type=click.Choice(["pixel-lstm", "mtlcc", "fcn-convlstm"]), default="mtlcc", show_default=True)
@click.option("--stack", required=True, type=click.Path(), help="Stack folder or stack.vrt from `lulc stack`.")
@click.option("--labels", required=True, type=click.Path(), help="Label raster, or vector file with a class column.")
@click.option("--label-column", default="class", show_default=True)
@click.option("--classes", type=click.Path(), default=None, help="classes.json: ordered class names and colours.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--tile", type=int, default=24, show_default=True, help="Training tile size in px.")
@click.option("--stride", type=int, default=None, help="Tile stride inside a split block (default tile/2).")
@click.option("--split-block", type=int, default=None, help="Spatial split block size in px (default 2 x tile).")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=1e-3, show_default=True)
@click.option("--infer-tile", type=int, default=64, show_default=True)
@click.option("--infer-overlap", type=int, default=8, show_default=True)
@click.option("--units", type=int, default=None, help="pixel-lstm: LSTM units (default 64).")
@click.option("--layers", "num_layers", type=int, default=None, help="pixel-lstm: stacked LSTM layers (default 2).")
@click.option("--dropout", type=float, default=None, help="pixel-lstm: dropout (default 0.3).")
@click.option("--filters", type=int, default=None, help="mtlcc: recurrent filters (default 24).")
@click.option("--cell", type=click.Choice(["gru", "lstm"]), default=None, help="mtlcc: ConvGRU (default) or ConvLSTM.")
@click.option("--depth", type=int, default=None, help="fcn-convlstm: poolings (default 2).")
@click.option("--width", type=int, default=None, help="fcn-convlstm: filters of the first level (default 16).")
@click.option("--sequence", type=click.Choice(["fixed", "random"]), default="fixed", show_default=True,
              help="random: each batch sees a random sorted subset of the dates.")
@click.option("--sequence-length", type=int, default=None, help="Dates per random sequence (default T/2).")
@click.option("--init-from", type=click.Path(), default=None, help="fcn-convlstm: start the encoder from a unet bundle.")
@click.option("--mask-unstable-water", default=None, help="GREEN,NIR band names: drop labels where the NDWI flips.")
@click.option("--water-threshold", type=float, default=0.0, show_default=True)
@click.option("--compare-single-date", is_flag=True, help="Also train a single-date U-Net on the same split and record it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle folder.")
@handle_errors
def train_temporal(units, num_layers, dropout, filters, cell, depth, width, **options):
    """Train a temporal model (pixel-lstm, mtlcc, fcn-convlstm) on a time-series stack."""
    from lulc.training.metrics import format_table
    from lulc.training.timeseries import TemporalConfig, train_temporal as run

    model_options = {k: v for k, v in dict(units=units, num_layers=num_layers, dropout=dropout, filters=filters,
                                           cell=cell, depth=depth, width=width).items() if v is not None}
    bundle = run(TemporalConfig(**options, model_options=model_options))
    metrics = bundle.manifest.provenance["metrics"]
    click.echo(format_table(metrics["test"]))
    if "single_date_unet" in metrics:
        base = metrics["single_date_unet"]
        click.echo(f"single-date U-Net ({base['date']}): overall accuracy {base['metrics']['overall_accuracy']:.4f}")
    click.echo(f"bundle: {bundle.root}")
