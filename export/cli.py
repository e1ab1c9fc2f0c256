"""``lulc export``: write verified artefacts into a bundle."""
from __future__ import annotations

import click

from lulc.runtime.cli import handle_errors

TARGETS = ("onnx", "trt", "tfjs")


@click.command("export")
@click.argument("bundle", type=click.Path())
@click.option("--target", type=click.Choice([*TARGETS, "all"]), default="onnx", show_default=True,
              help="`all`: ONNX and TF.js, plus TensorRT where it is installed.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (tf2onnx supports up to 18).")
@click.option("--fp16", is_flag=True, help="Also write model.fp16.onnx (gated on argmax agreement).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp16", show_default=True,
              help="TensorRT engine precision (int8 is calibrated on the bundle's sample tiles).")
@click.option("--max-batch", type=click.IntRange(1), default=8, show_default=True,
              help="Largest batch the TensorRT engine accepts (match lulc-infer --batch-size).")
@handle_errors
def export(bundle, target, opset, fp16, precision, max_batch):
    """Export the Keras model of BUNDLE, verified against Keras before it is written."""
    from lulc.runtime.bundle import Bundle
    from lulc.runtime.errors import BackendUnavailable

    b = Bundle.load(bundle)
    for name in TARGETS if target == "all" else (target,):
        try:
            results = _run_target(b, name, opset, fp16, precision, max_batch)
        except BackendUnavailable as exc:
            if target != "all" or name != "trt":
                raise
            click.echo(f"warning: trt skipped: {exc}", err=True)
            continue
        for artifact, fig in results.items():
            click.echo(f"{artifact}: max abs diff {fig['max_abs_diff']:.2e}, argmax agreement "
                       f"{fig['argmax_agreement']:.4%} -> {b.root / b.manifest.artifacts[artifact].path}")


def _run_target(b, name: str, opset: int, fp16: bool, precision: str, max_batch: int) -> dict[str, dict]:
    if name == "onnx":
        from lulc.export.onnx import export_onnx

        return export_onnx(b, opset=opset, fp16=fp16)
    if name == "tfjs":
        from lulc.export.tfjs import export_tfjs

        return export_tfjs(b)
    from lulc.export.trt import export_trt

    return export_trt(b, precision=precision, max_batch=max_batch, opset=opset)
