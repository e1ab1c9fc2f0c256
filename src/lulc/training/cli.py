"""``lulc sample``, ``lulc train`` and ``lulc evaluate``: thin commands over :mod:`lulc.training`.

One ``lulc train`` trains every architecture: single-date models read ``--image`` (or a
``--data`` folder), temporal ones a ``--stack`` from ``lulc stack``; ``train-temporal`` is
the same command under its old name. Options that only one kind of model takes are listed
under their own heading in ``--help``, and giving one to the other kind is an error.

A setting no run can use exits like click's own option errors (code 2, pointing at the
flag or config key); problems with the data, files and outputs exit with 1.
"""
from __future__ import annotations

import click
from click.core import ParameterSource

from lulc.runtime.cli_errors import handle_errors

SINGLE_DATE_ARCHS = ["unet", "fcn", "scene-cnn", "scene-vgg16", "scene-densenet121"]
TEMPORAL_ARCHS = ["pixel-lstm", "mtlcc", "fcn-convlstm"]
ARCHS = SINGLE_DATE_ARCHS + TEMPORAL_ARCHS
SECTIONS = {
    "Single-date models (unet, fcn, scene-*)": (
        "image", "data", "aoi", "align", "indices", "patch_rule", "weights", "freeze_backbone", "class_weights",
        "brightness", "resume"),
    "Temporal models (pixel-lstm, mtlcc, fcn-convlstm)": (
        "stack", "units", "num_layers", "dropout", "filters", "cell", "sequence", "sequence_length", "init_from",
        "mask_unstable_water", "water_threshold", "compare_single_date"),
}



class SectionedCommand(click.Command):
    """A command whose ``--help`` lists options under headings (``sections``: heading -> names)."""

    def __init__(self, *args, sections: dict[str, tuple[str, ...]], **kwargs):
        super().__init__(*args, **kwargs)
        self.sections = sections

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        heading_of = {name: heading for heading, names in self.sections.items() for name in names}
        records: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record:
                records.setdefault(heading_of.get(param.name, "Options"), []).append(record)
        for heading in ("Options", *self.sections):
            if records.get(heading):
                with formatter.section(heading):
                    formatter.write_dl(records[heading])


@click.command("sample")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for image.tif, labels.tif, classes.json.")
@handle_errors
def sample(output):
    """Write the built-in sample: real Sentinel-2 (13 bands) with OpenStreetMap land-use labels."""
    from lulc.training.sampledata import build_sample

    paths = build_sample(output)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@click.command("train", cls=SectionedCommand, sections=SECTIONS)
@click.argument("config_file", required=False, type=click.Path(dir_okay=False))
@click.option("--arch", type=click.Choice(ARCHS), help="Model architecture.  [default: unet; mtlcc with --stack]")
@click.option("--labels", type=click.Path(), help="Label raster, or vector file (GeoPackage/Shapefile/GeoJSON).")
@click.option("--label-column", default="class", show_default=True, help="Class column of a vector label file.")
@click.option("--classes", type=click.Path(), default=None,
              help="classes.json: ordered class names, colours and label values (default: from the label raster).")
@click.option("-o", "--output", type=click.Path(), help="Bundle folder to write (a new or empty folder, or a bundle with --overwrite).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--tile", type=int, help="Training tile / scene patch size in px.  [default: 64; temporal: 24]")
@click.option("--stride", type=int, default=None, help="Tile stride inside a split block (default tile/2).")
@click.option("--split-block", type=int, default=None, help="Spatial split block size in px (default 2 x tile).")
@click.option("--batch-size", type=int, help="[default: 16; temporal: 4]")
@click.option("--lr", "learning_rate", type=float, default=1e-3, show_default=True)
@click.option("--depth", type=int, help="Poolings of unet/fcn/scene-cnn/fcn-convlstm.  [default: 3; fcn-convlstm: 2]")
@click.option("--width", type=int, help="Filters of the first level.  [default: 16]")
@click.option("--infer-tile", type=int, help="Tile size lulc-infer uses.  [default: 256; temporal: 64]")
@click.option("--infer-overlap", type=int, help="Tile overlap lulc-infer blends.  [default: 32; temporal: 8]")
@click.option("--patience", type=int, default=5, show_default=True, help="Early stopping: epochs without better val loss (0: off).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Split, initial weights, batch order and augmentation; same seed + data + machine = same model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle (only a lulc bundle) and a leftover checkpoint.")
@click.option("--image", multiple=True, type=click.Path(), help="Input raster (GeoTIFF/VRT); repeat to stack several.")
@click.option("--data", type=click.Path(), help="EuroSAT-layout folder (one sub-folder of patches per class) instead of --image/--labels.")
@click.option("--aoi", type=click.Path(), default=None, help="Vector area of interest: labels outside it are ignored.")
@click.option("--align", is_flag=True, help="Warp rasters that are not on the first image's grid onto it.")
@click.option("--indices", default="", help="Derived bands to append, e.g. ndvi,ndwi,ndbi.")
@click.option("--patch-rule", type=click.Choice(["majority", "centre"]), default="majority", show_default=True,
              help="Label of a scene patch: its majority class or its centre pixel.")
@click.option("--weights", type=click.Path(), default=None, help="Local pretrained backbone weights (.h5) for scene-vgg16/-densenet121.")
@click.option("--freeze-backbone", is_flag=True, help="Train only the classifier head (fine-tuning phase 1).")
@click.option("--class-weights", default="none", show_default=True, help="balanced, none, or a JSON file of weights.")
@click.option("--brightness", type=float, default=0.0, show_default=True, help="Brightness jitter: scale reflectance by 1 +- this.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--stack", type=click.Path(), help="Stack folder or stack.vrt from `lulc stack`.")
@click.option("--units", type=int, default=None, help="pixel-lstm: LSTM units (default 64).")
@click.option("--layers", "num_layers", type=int, default=None, help="pixel-lstm: stacked LSTM layers (default 2).")
@click.option("--dropout", type=float, default=None, help="pixel-lstm: dropout (default 0.3).")
@click.option("--filters", type=int, default=None, help="mtlcc: recurrent filters (default 24).")
@click.option("--cell", type=click.Choice(["gru", "lstm"]), default=None, help="mtlcc: ConvGRU (default) or ConvLSTM.")
@click.option("--sequence", type=click.Choice(["fixed", "random"]), default="fixed", show_default=True,
              help="random: each batch sees a random sorted subset of the dates.")
@click.option("--sequence-length", type=int, default=None, help="Dates per random sequence (default T/2).")
@click.option("--init-from", type=click.Path(), default=None, help="fcn-convlstm: start the encoder from a unet bundle.")
@click.option("--mask-unstable-water", default=None, help="GREEN,NIR band names: drop labels where the NDWI flips.")
@click.option("--water-threshold", type=float, default=0.0, show_default=True)
@click.option("--compare-single-date", is_flag=True, help="Also train a single-date U-Net on the same split and record it.")
@click.pass_context
@handle_errors
def train(ctx, config_file, **options):
    """Train a model and write a model bundle. Settings come from CONFIG_FILE (YAML), overridden by flags."""
    from lulc.training.config import TemporalConfig, build_config
    from lulc.training.metrics import format_table

    # only what the user set: the settings' own defaults depend on the kind of model
    given = {k: v for k, v in options.items()
             if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    if "image" in given:
        given["image"] = list(given["image"])
    cfg, record = build_config(config_file, given)
    if isinstance(cfg, TemporalConfig):
        from lulc.training.timeseries import train_temporal

        bundle = train_temporal(cfg, record)
    else:
        from lulc.training.train import train as train_single_date

        bundle = train_single_date(cfg, record)
    metrics = bundle.manifest.provenance["metrics"]
    click.echo(format_table(metrics["test"]))
    if "single_date_unet" in metrics:
        base = metrics["single_date_unet"]
        click.echo(f"single-date U-Net ({base['date']}): overall accuracy {base['metrics']['overall_accuracy']:.4f}")
    click.echo(f"bundle: {bundle.root}")


@click.command("evaluate")
@click.argument("bundle", type=click.Path())
@click.option("--image", multiple=True, type=click.Path(), help="Raster(s) to evaluate on (default: the training data).")
@click.option("--labels", type=click.Path(), help="Labels for --image or --stack (raster or vector).")
@click.option("--data", type=click.Path(), help="EuroSAT-layout folder to evaluate a scene bundle on.")
@click.option("--stack", type=click.Path(), help="Time-series stack to evaluate a temporal bundle on.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "val", "train", "all"]),
              help="Which split of the data; 'all' for data the model never saw.")
@click.option("--baseline", type=click.Choice(["rf"]), default=None,
              help="Also fit a random forest on the same training blocks and report it beside the model.")
@click.option("--align", is_flag=True, help="Warp rasters and labels that are not on the first image's grid onto it.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Write metrics.json/confusion.png here instead of into the bundle.")
@handle_errors
def evaluate(bundle, image, labels, data, stack, split, baseline, align, output):
    """Overall accuracy, kappa, per-class F1 and the confusion matrix of BUNDLE on held-out data."""
    from lulc.training.evaluate import evaluate_bundle
    from lulc.training.metrics import format_table

    metrics = evaluate_bundle(bundle, list(image) or None, labels, data, split, output, stack, baseline, align)
    click.echo(format_table(metrics))
