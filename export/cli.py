"""``lulc export``: write verified artefacts into a bundle."""
from __future__ import annotations

import click

from lulc.runtime.cli import handle_errors


@click.command("export")
@click.argument("bundle", type=click.Path())
@click.option("--target", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (tf2onnx supports up to 18).")
@handle_errors
def export(bundle, target, opset):
    """Export the Keras model of BUNDLE, verified against Keras before it is written."""
    from lulc.export.onnx import export_onnx
    from lulc.runtime.bundle import Bundle

    b = Bundle.load(bundle)
    figures = export_onnx(b, opset=opset)
    click.echo(f"{target}: max abs diff {figures['max_abs_diff']:.2e}, argmax agreement {figures['argmax_agreement']:.4%} -> {b.root / 'model.onnx'}")
