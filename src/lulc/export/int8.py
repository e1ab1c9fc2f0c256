"""INT8 ONNX: static QDQ quantisation calibrated on the training split, gated on the test split.

A quantised model is only worth shipping if the *map* stays the map: the gate measures, on
the bundle's held-out test split, the share of valid pixels whose class is unchanged against
the fp32 ONNX (>= 99.5 %) and the overall accuracy lost (<= 0.5 percentage points). The three
splits are re-cut from the inputs recorded in the bundle exactly as training cut them (same
seed, same blocks), so each plays one role and none leaks into another's:

* **train** calibrates: activation ranges from onnxruntime's percentile calibration. Plain
  min/max ranges are stretched by rare outliers (78-86 % agreement on val for the sample
  U-Net, all convolutions int8); clipping at the 99.9th-99.99th percentile gave 98.6-99.0 %.
  Entropy calibration is not offered: ``quantize_static`` (onnxruntime 1.32) passes it no bin
  counts, so it searches 128 histogram bins for a 128-bin range and returns min/max.
* **val** chooses: the clipping percentile, then which nodes stay in float. Nodes that run
  faster in float stay float (onnxruntime's ConvTranspose, on the sample). The others are
  ranked by the agreement each costs when quantised alone over the time it adds when kept in
  float (measured), and kept in float in that order until val clears the gate by
  SELECTION_MARGIN; then any float node val no longer needs is given back to int8. On the
  sample: the first conv on the raw bands, the classifier, the full-resolution encoder and
  decoder convs.
* **test** only judges, so the figures in the manifest are not tuned to it.

One artefact for CPUs and GPUs: int8 per-channel weights and int8 *symmetric* activations
(zero point 0) with float biases, the only Q/DQ that TensorRT's explicit quantisation
accepts, and onnxruntime's default (S8S8 QDQ). On the sample U-Net (2 AVX2 cores, no VNNI)
it ran as fast as uint8 asymmetric activations (all-int8 1.53-1.63x fp32 vs 1.61-1.68x;
with the gate's float nodes 1.18-1.24x vs 1.22-1.23x) and needed the same float nodes for
the same agreement, so there is no CPU-only variant to keep in step.
"""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from lulc.export.layout import export_channels_first
from lulc.export.parity import probabilities, staging
from lulc.runtime.core.bundle import Bundle
from lulc.runtime.core.errors import BundleError, LulcError, ParityError

logger = logging.getLogger(__name__)

#: gate: share of valid test pixels whose class the int8 model keeps
AGREEMENT = 0.995
#: gate: overall accuracy the int8 model may lose on the test split (absolute, 0.5 pp)
MAX_ACCURACY_DROP = 0.005
#: val must clear the agreement gate by this much: val and test differed by up to 0.15 pp on the sample
SELECTION_MARGIN = 0.002
#: calibration tiles drawn (seeded) from the training split; onnxruntime keeps every
#: activation of every calibration batch in memory until it computes the ranges
CALIBRATION_TILES = 128
#: onnxruntime's histogram calibrators need equal batches: the tile count is a multiple of this
CALIBRATION_BATCH = 8
#: activation clipping percentiles tried, chosen on val (first wins ties)
PERCENTILES = (99.99, 99.999, 99.9)
QUANTIZED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
#: beyond this share of float nodes int8 no longer pays for its Q/DQ and layout changes
MAX_FLOAT_SHARE = 0.5
#: a node runs "faster in float" only beyond this share of the all-int8 time (timing noise)
TIMING_NOISE = 0.03
#: rounds of fresh session pairs behind a speed ratio (their median): one pair's ratio varied
#: by up to 15 % between pairs on a 2-core VM (1.02-1.21 for one model)
SPEED_ROUNDS = 3
ARTIFACT, DEST = "onnx-int8", "model.int8.onnx"


@dataclass
class Split:
    """Normalised tiles of one split with their labels; ``ref`` holds the fp32 probabilities."""

    x: np.ndarray
    y: np.ndarray
    valid: np.ndarray
    ref: np.ndarray | None = None


def recorded_splits(bundle: Bundle) -> dict[str, Split]:
    """train/val/test re-cut from the inputs recorded in the bundle, normalised as at training."""
    from lulc.training.config import TrainConfig
    from lulc.training.data import SPLITS, normalize
    from lulc.training.inputs import prepare_samples

    m = bundle.manifest
    recorded = (m.provenance or {}).get("config")
    if m.task not in ("segmentation", "scene") or not recorded:
        raise BundleError(f"int8 export needs a segmentation or scene bundle made by `lulc train`; "
                          f"{bundle.root} is a {m.task} bundle{'' if recorded else ' without a training config'}")
    cfg = TrainConfig(**{f.name: recorded[f.name] for f in fields(TrainConfig) if f.name in recorded})
    try:
        with tempfile.TemporaryDirectory(prefix="lulc-int8-") as work:
            samples = prepare_samples(cfg, Path(work))
    except LulcError as exc:
        raise BundleError(f"int8 calibration re-reads the training data recorded in {bundle.root}: {exc}") from exc
    if samples.spec.channels != m.input.channels:
        raise BundleError(f"the recorded training data now has bands {samples.spec.channels}, the bundle "
                          f"{m.input.channels}: it changed since training")
    tiles = samples.tiles
    splits = {}
    for name in SPLITS:
        part = tiles.part(name)
        splits[name] = Split(normalize(part.x, part.valid, m.normalization), part.y, part.valid)
    return splits


def calibration_tiles(train: Split, seed: int = 0) -> np.ndarray:
    """Up to CALIBRATION_TILES training tiles (seeded draw), a whole number of batches."""
    n = min(CALIBRATION_TILES, len(train.x) // CALIBRATION_BATCH * CALIBRATION_BATCH)
    if n == 0:
        raise BundleError(f"the training split has {len(train.x)} tiles; int8 calibration needs {CALIBRATION_BATCH}")
    return train.x[np.sort(np.random.default_rng(seed).permutation(len(train.x))[:n])]


def measure(split: Split, probs: np.ndarray, task: str, ignore: int) -> dict:
    """Agreement with fp32 on valid pixels and the overall accuracy of both on labelled ones.

    Scene bundles count one unit per patch (its centre pixel), as their metrics do.
    """
    ref, cand, y, valid = split.ref.argmax(-1), probs.argmax(-1), split.y, split.valid
    if task == "scene":
        c = y.shape[1] // 2
        ref, cand, y, valid = ref[:, c, c], cand[:, c, c], y[:, c, c], valid.any(axis=(1, 2))
    labelled = valid & (y != ignore)
    oa_fp32 = float((ref[labelled] == y[labelled]).mean()) if labelled.any() else 0.0
    oa_int8 = float((cand[labelled] == y[labelled]).mean()) if labelled.any() else 0.0
    diff = np.abs(split.ref.astype(np.float64) - probs)
    return {
        "argmax_agreement": float((ref[valid] == cand[valid]).mean()) if valid.any() else 0.0,
        "overall_accuracy_fp32": oa_fp32, "overall_accuracy_int8": oa_int8, "accuracy_drop": oa_fp32 - oa_int8,
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "valid_units": int(valid.sum()), "labelled_units": int(labelled.sum()), "tiles": int(len(split.x)),
    }


def passes(figures: dict, margin: float = 0.0) -> bool:
    return figures["argmax_agreement"] >= AGREEMENT + margin and figures["accuracy_drop"] <= MAX_ACCURACY_DROP


class _Tiles(CalibrationDataReader):
    """Calibration batches for onnxruntime, all of CALIBRATION_BATCH tiles."""

    def __init__(self, name: str, tiles: np.ndarray):
        self._batches = iter([{name: tiles[i : i + CALIBRATION_BATCH]} for i in range(0, len(tiles), CALIBRATION_BATCH)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


class Quantizer:
    """The fp32 graph, pre-processed once, quantised with stored ranges and any float nodes.

    Calibration (running the training tiles) happens once per percentile and is cached as
    a JSON of tensor ranges; every later quantisation with other float nodes reuses it.
    """

    def __init__(self, src: Path, work: Path):
        self.work = work
        self.pre = work / "pre.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(src), str(self.pre), skip_symbolic_shape=True)
        graph = onnx.load(str(self.pre)).graph
        self.input_name = graph.input[0].name
        self.nodes = [n.name for n in graph.node if n.op_type in QUANTIZED_OPS]

    def ranges(self, percentile: float) -> Path:
        return self.work / f"ranges.p{percentile}.json"

    def quantize(self, percentile: float, exclude: list[str] = (), only: list[str] | None = None,
                 tiles: np.ndarray | None = None) -> Path:
        """Write and return a QDQ model; ``tiles`` calibrate when no ranges are cached yet."""
        dst = self.work / "candidate.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress
            quantize_static(
                str(self.pre), str(dst), None if tiles is None else _Tiles(self.input_name, tiles),
                quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                activation_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile,
                op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=list(exclude), nodes_to_quantize=only,
                calibration_cache_path=str(self.ranges(percentile)),
                # TensorRT: zero points 0 and float biases (onnxruntime quantises those itself)
                extra_options={"CalibPercentile": percentile, "ActivationSymmetric": True, "QuantizeBias": False})
        model = onnx.load(str(dst))
        float_tail(model)
        onnx.save(model, str(dst))
        return dst


def float_tail(model: onnx.ModelProto) -> None:
    """Drop the Q/DQ pairs no int8 node reads (the classifier's logits).

    onnxruntime quantises every quantised node's output, the last one's too: int8 logits
    (127 steps over their range) tie the top two classes wherever fp32 nearly does, and the
    tie goes to the lower class index; on the sample U-Net a third of the pixels all-int8
    changed were such ties. The classifier stays an int8 convolution (int8 input and weights,
    int32 accumulation) that emits float logits, the pattern TensorRT's explicit quantisation
    runs for a network's last layer.
    """
    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds: dict[str, bool] = {}

    def feeds_int8(tensor: str) -> bool:
        if tensor not in feeds:
            feeds[tensor] = any(n.op_type in QUANTIZED_OPS or any(feeds_int8(o) for o in n.output)
                                for n in consumers.get(tensor, []))
        return feeds[tensor]

    weights, outputs = {i.name for i in graph.initializer}, {o.name for o in graph.output}
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights]:
        dqs = consumers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" or d.output[0] in outputs or feeds_int8(d.output[0])
                          for d in dqs):
            continue
        for dq in dqs:
            for reader in consumers.get(dq.output[0], []):
                reader.input[:] = [q.input[0] if name == dq.output[0] else name for name in reader.input]
            graph.node.remove(dq)
        graph.node.remove(q)


def session(path: Path) -> ort.InferenceSession:
    """A single-threaded CPU session: what one lulc-infer CPU caller pays per tile."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def fastest(sessions: list[ort.InferenceSession], x: np.ndarray, runs: int = 5) -> list[float]:
    """Fastest of ``runs`` calls on ``x`` for each session, the sessions taking turns.

    Taking turns puts every model under the same load: timed one after another, a busy
    spell during one model's runs made whole sets of nodes look faster in float.
    """
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    for s, feed in zip(sessions, feeds):
        s.run(None, feed)
    best = [float("inf")] * len(sessions)
    for _ in range(runs):
        for i, (s, feed) in enumerate(zip(sessions, feeds)):
            t0 = time.perf_counter()
            s.run(None, feed)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def speed_ratio(slow: Path, fast: Path, probe: np.ndarray) -> float:
    """How many times faster ``fast`` runs than ``slow`` on ``probe``: the median over
    SPEED_ROUNDS pairs of fresh sessions, each pair timed in turns."""
    ratios = []
    for _ in range(SPEED_ROUNDS):
        slow_time, fast_time = fastest([session(slow), session(fast)], probe)
        ratios.append(slow_time / fast_time)
    return float(np.median(ratios))


def float_costs(q: Quantizer, percentile: float, probe: np.ndarray) -> tuple[float, dict[str, float]]:
    """All-int8 seconds on ``probe`` and the seconds each node adds when it alone stays float.

    Measured, not estimated from multiply-adds: onnxruntime's int8 kernels are not uniformly
    faster. Each node's model is timed in turns with the all-int8 one and costed against that
    pairing; on the sample U-Net (70-90 ms all-int8 on the probe) a float node added 1-9 ms,
    while two sessions of one model differed by 4-15 %: a node that looks faster in float
    here is timed again (``select``).
    """
    all_int8 = session(q.quantize(percentile))
    pairs = {n: fastest([all_int8, session(q.quantize(percentile, exclude=[n]))], probe) for n in q.nodes}
    return min(base for base, _ in pairs.values()), {n: alone - base for n, (base, alone) in pairs.items()}


def choose_percentile(q: Quantizer, calibration: np.ndarray, val: Split, task: str,
                      ignore: int) -> tuple[float, dict[str, dict]]:
    """The clipping percentile whose all-int8 model keeps most of fp32's classes on val, and
    the val figures of each (keyed by the percentile as text, as the manifest records them)."""
    tried = {str(p): measure(val, probabilities(q.quantize(p, tiles=calibration), val.x), task, ignore)
             for p in PERCENTILES}
    best = max(PERCENTILES, key=lambda p: tried[str(p)]["argmax_agreement"])
    logger.info("int8 val agreement per clipping percentile: %s", {p: f["argmax_agreement"] for p, f in tried.items()})
    return best, tried


def select(q: Quantizer, calibration: np.ndarray, val: Split, task: str, ignore: int,
           probe: np.ndarray) -> tuple[float, dict[str, list[str]], dict, dict]:
    """(percentile, float nodes by reason, val figures, val figures per percentile), chosen on val.

    Nodes that run faster in float, in their pairing and again on fresh sessions, stay float;
    last, the others faster in float in their pairing stay float if fresh sessions confirm it
    for them together.
    If val still falls short, nodes are kept in float in order of agreement bought per second:
    each node's loss (quantised alone) over its measured float cost, so cheap sensitive nodes
    go first and the costly ones last.
    """
    def on_val(path: Path) -> dict:
        return measure(val, probabilities(path, val.x), task, ignore)

    best, tried = choose_percentile(q, calibration, val, task, ignore)
    base, cost = float_costs(q, best, probe)
    noise, budget = TIMING_NOISE * base, int(MAX_FLOAT_SHARE * len(q.nodes))
    # at most MAX_FLOAT_SHARE, fastest-in-float first: on a busy machine every timing can look
    # "faster in float", and an "int8" model must not come out with no int8 node
    speed = sorted((n for n in q.nodes if cost[n] < -noise), key=cost.get)[:budget]
    if speed:  # timed again on fresh session pairs: one pairing drew 2-3 such nodes from noise alone
        all_int8 = shutil.copyfile(q.quantize(best), q.work / "all-int8.onnx")
        speed = [n for n in speed if speed_ratio(all_int8, q.quantize(best, exclude=[n]), probe) > 1 + TIMING_NOISE]
    figures, chosen = on_val(q.quantize(best, exclude=speed)) if speed else tried[str(best)], []
    if not passes(figures, SELECTION_MARGIN):
        loss = {n: 1 - on_val(q.quantize(best, only=[n]))["argmax_agreement"] for n in q.nodes if n not in speed}
        ranked = sorted(loss, key=lambda n: -loss[n] / max(cost[n], noise))[: budget - len(speed)]
        logger.info("int8 per node on val: agreement lost, float cost (ms): %s",
                    {n: (round(loss[n], 5), round(1e3 * cost[n], 1)) for n in ranked})
        for node in ranked:
            chosen.append(node)
            figures = on_val(q.quantize(best, exclude=speed + chosen))
            if passes(figures, SELECTION_MARGIN):
                break
        # single-node losses overlap: give back to int8 any float node val no longer needs, dearest first
        for node in sorted(chosen[:-1], key=lambda n: -cost[n]) if passes(figures, SELECTION_MARGIN) else ():
            trial = on_val(q.quantize(best, exclude=speed + [n for n in chosen if n != node]))
            if passes(trial, SELECTION_MARGIN):
                chosen.remove(node)
                figures = trial
    # savings each under the noise add up (the U-Net's three ConvTransposes, which onnxruntime's
    # CPU runs in float between their Q/DQ: 1-3 ms each, 10 % together): the other nodes that ran
    # faster in float in their pairing are timed again as one group, once the float nodes val
    # needs are known, and stay float together (if val still passes) or not at all
    floats = speed + chosen
    group = sorted((n for n in q.nodes if cost[n] < 0 and n not in floats), key=cost.get)[: budget - len(floats)]
    if group:
        so_far = shutil.copyfile(q.quantize(best, exclude=floats), q.work / "so-far.onnx")
        together = speed_ratio(so_far, q.quantize(best, exclude=floats + group), probe)
        logger.info("int8: %d more nodes faster in float in their pairing, together %.3fx: %s", len(group), together, group)
        trial = on_val(q.quantize(best, exclude=floats + group)) if together > 1 + TIMING_NOISE else {}
        if trial and passes(trial, SELECTION_MARGIN):
            speed, figures = speed + group, trial
    return best, {"speed": speed, "agreement": chosen}, figures, tried


def refusal(figures: dict, floats: int, total: int) -> str:
    return (f"INT8 export refused: on the test split the int8 model keeps the fp32 class on "
            f"{figures['argmax_agreement']:.3%} of {figures['valid_units']:,} valid pixels (gate >= {AGREEMENT:.1%}) "
            f"and its overall accuracy is {figures['overall_accuracy_int8']:.4f} vs fp32 "
            f"{figures['overall_accuracy_fp32']:.4f} ({-100 * figures['accuracy_drop']:+.2f} pp, gate >= "
            f"{-100 * MAX_ACCURACY_DROP:.1f} pp), with {floats} of {total} quantisable nodes kept in float; nothing written")


def speed_probe(seed: int, tile: int, channels: int) -> np.ndarray:
    """The random batch int8 and fp32 are timed on (two tiles of at most 512 px)."""
    size = min(tile, 512)
    return np.random.default_rng(seed).normal(size=(2, size, size, channels)).astype(np.float32)


def quantization_details(src: Path, candidate: Path, calibration: np.ndarray, percentile: float, seed: int,
                         tried: dict[str, dict], selected: dict, probe: np.ndarray) -> dict:
    """What the manifest records of any int8 model: its Q/DQ scheme, calibration (``tried``:
    the all-int8 val figures per percentile), the val figures of the model itself
    (``selected``) and its speed."""
    return {
        "precision": "int8", "format": "QDQ", "source": "onnx", "weights": "int8 symmetric per-channel",
        "activations": "int8 symmetric per-tensor (zero point 0)", "biases": "float", "logits": "float",
        "tensorrt_compatible": True,
        "calibration": {"method": "percentile", "percentile": percentile, "split": "train",
                        "tiles": int(len(calibration)), "tile_px": int(calibration.shape[1]), "seed": seed,
                        "val_agreement_per_percentile": {p: round(f["argmax_agreement"], 6) for p, f in tried.items()}},
        "selection": {"split": "val", **{k: selected[k] for k in ("argmax_agreement", "accuracy_drop")}},
        "speed_vs_fp32": round(speed_ratio(src, candidate, probe), 3),
        "speed_probe": f"one thread, {' x '.join(map(str, probe.shape[:3]))} px, fastest of 5, median of "
                       f"{SPEED_ROUNDS} session pairs",
        "onnxruntime": ort.__version__,
    }


def record(bundle: Bundle, candidate: Path, figures: dict, details: dict) -> dict[str, dict]:
    """Record a gated ``candidate`` as ``onnx-int8`` (and its channels-first twin)."""
    figures.update(split="test", min_agreement=AGREEMENT, max_accuracy_drop=MAX_ACCURACY_DROP)
    with staging(bundle.root / f".{DEST}.partial") as staged:
        shutil.copyfile(candidate, staged)
        bundle.add_artifact(ARTIFACT, staged, "onnx", parity=figures, details=details, dest=DEST)
    logger.info("%s parity: %s", ARTIFACT, figures)
    twin = export_channels_first(bundle, ARTIFACT)
    return {ARTIFACT: figures, **({f"{ARTIFACT}-nchw": twin} if twin else {})}


def gate_inputs(bundle: Bundle, fp32: Path) -> tuple[int, dict[str, Split], np.ndarray]:
    """What every int8 export works from: the training seed, the recorded splits (val and test
    with the ``fp32`` model's probabilities as reference) and the calibration tiles."""
    seed = int(bundle.manifest.provenance.get("config", {}).get("seed", 0))
    splits = recorded_splits(bundle)
    for name in ("val", "test"):
        splits[name].ref = probabilities(fp32, splits[name].x)
    return seed, splits, calibration_tiles(splits["train"], seed)


def export_int8(bundle: Bundle) -> dict[str, dict]:
    """Calibrate, choose and gate an int8 ONNX (post-training), then record it as ``onnx-int8``."""
    src, m = bundle.artifact_path("onnx"), bundle.manifest
    seed, splits, calibration = gate_inputs(bundle, src)
    val, test = splits["val"], splits["test"]
    with tempfile.TemporaryDirectory(prefix="lulc-int8-") as tmp:
        q = Quantizer(src, Path(tmp))
        probe = speed_probe(seed, m.tile.size, calibration.shape[-1])
        percentile, why, val_figures, tried = select(q, calibration, val, m.task, m.ignore_index, probe)
        floats = why["speed"] + why["agreement"]
        candidate = q.quantize(percentile, exclude=floats)
        figures = measure(test, probabilities(candidate, test.x), m.task, m.ignore_index)
        if not passes(figures):
            raise ParityError(refusal(figures, len(floats), len(q.nodes)))
        details = quantization_details(src, candidate, calibration, percentile, seed, tried, val_figures, probe)
        details.update(method="post-training", float_nodes=floats, float_for_speed=why["speed"],
                       float_for_agreement=why["agreement"], quantized_nodes=len(q.nodes) - len(floats))
        return record(bundle, candidate, figures, details)
