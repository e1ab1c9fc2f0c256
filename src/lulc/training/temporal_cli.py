"""``lulc simulate`` (a thin command over :mod:`lulc.training.simulate`) and ``lulc train-temporal``,
the old name of ``lulc train`` for time series."""
from __future__ import annotations

import click

from lulc.runtime.cli_errors import handle_errors
from lulc.training.cli import train


@click.command("simulate")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder for dates/, stack/, labels.tif, classes.json.")
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


# `lulc train` trains temporal models too (--stack; mtlcc unless --arch says otherwise);
# the old command name stays as an alias.
train_temporal = train
