"""``lulc export``: write verified artefacts into a bundle."""
from __future__ import annotations

import click

from lulc.runtime.cli_errors import handle_errors

TARGETS = ("onnx", "trt", "tfjs")


@click.command("export")
@click.argument("bundle", type=click.Path())
@click.option("--target", type=click.Choice([*TARGETS, "all"]), default="onnx", show_default=True,
              help="`all`: ONNX and TF.js, plus TensorRT where it is installed.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (tf2onnx supports up to 18).")
@click.option("--fp16", is_flag=True, help="Also write model.fp16.onnx (gated on argmax agreement).")
@click.option("--int8", is_flag=True,
              help="Also write model.int8.onnx: calibrated on the training split, gated on the test split "
                   "(re-read from the training inputs recorded in the bundle).")
@click.option("--qat", type=click.IntRange(1), metavar="EPOCHS",
              help="With --int8: first fine-tune EPOCHS epochs with int8 rounding in the forward pass "
                   "(quantisation-aware) and quantise every convolution; if that misses the gate, fall back "
                   "to the post-training search.")
@click.option("--scene-stride", "strides", type=click.IntRange(1), multiple=True, metavar="N",
              help="Scene bundles: also write model.strideN.onnx, a class per N px cell for `lulc-infer "
                   "--scene-stride N` (repeatable; gated against the model run window by window).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp16", show_default=True,
              help="TensorRT engine precision (int8: built from model.int8.onnx, see --int8).")
@click.option("--max-batch", type=click.IntRange(1), default=8, show_default=True,
              help="Largest batch the TensorRT engine accepts (match lulc-infer --batch-size).")
@handle_errors
def export(bundle, target, opset, fp16, int8, qat, strides, precision, max_batch):
    """Export the Keras model of BUNDLE, verified against Keras before it is written."""
    from lulc.runtime.core.bundle import Bundle
    from lulc.runtime.core.errors import BackendUnavailable

    if qat and not int8:
        raise click.UsageError("--qat fine-tunes the --int8 model: add --int8")
    for flag, used in (("--int8", int8), ("--scene-stride", strides)):
        if used and target not in ("onnx", "all"):
            raise click.UsageError(f"{flag} writes an ONNX model: use it with --target onnx or all")
    b = Bundle.load(bundle)
    for name in TARGETS if target == "all" else (target,):
        try:
            results = _run_target(b, name, opset, fp16, int8, qat, strides, precision, max_batch)
        except BackendUnavailable as exc:
            if target != "all" or name != "trt":
                raise
            click.echo(f"warning: trt skipped: {exc}", err=True)
            continue
        for artifact, fig in results.items():
            accuracy = (f", test overall accuracy {fig['overall_accuracy_int8']:.4f} (fp32 {fig['overall_accuracy_fp32']:.4f})"
                        if "overall_accuracy_int8" in fig else "")
            click.echo(f"{artifact}: max abs diff {fig['max_abs_diff']:.2e}, argmax agreement "
                       f"{fig['argmax_agreement']:.4%}{accuracy} -> {b.root / b.manifest.artifacts[artifact].path}")


def _run_target(b, name: str, opset: int, fp16: bool, int8: bool, qat: int | None, strides: tuple[int, ...],
                precision: str, max_batch: int) -> dict[str, dict]:
    if name == "onnx":
        from lulc.export.onnx import export_onnx

        if strides:  # before the slow export, not after it
            from lulc.export.scene_stride import check_scene_bundle

            for stride in strides:
                check_scene_bundle(b, stride)
        results = export_onnx(b, opset=opset, fp16=fp16)
        if int8:
            results.update(_int8(b, qat))
        for stride in strides:
            from lulc.export.scene_stride import export_scene_stride

            results.update(export_scene_stride(b, stride, opset=opset))
        return results
    if name == "tfjs":
        from lulc.export.tfjs import export_tfjs

        return export_tfjs(b)
    from lulc.export.trt import export_trt

    return export_trt(b, precision=precision, max_batch=max_batch, opset=opset)


def _int8(b, qat: int | None) -> dict[str, dict]:
    """Quantisation-aware first when asked (``qat`` epochs), post-training if that misses the gate.

    A gated model slower than fp32 here is said: `--precision auto` runs int8 on any CPU.
    """
    from lulc.export.int8 import ARTIFACT, export_int8

    results = None
    if qat:
        from lulc.export.qat import export_qat
        from lulc.runtime.core.errors import ParityError

        try:
            results = export_qat(b, qat)
        except ParityError as exc:
            click.echo(f"warning: {exc}; using the post-training search instead", err=True)
    results = results or export_int8(b)
    speed = b.manifest.artifacts[ARTIFACT].details["speed_vs_fp32"]
    if speed < 1:
        click.echo(f"warning: on this CPU {b.manifest.artifacts[ARTIFACT].path} ran {speed:.2f}x fp32 (one thread); "
                   f"lulc-infer's --precision auto takes int8 on a CPU: pass --precision fp32 where it is slower",
                   err=True)
    return results
