"""Where a lulc-infer run spends its time outside the model: read, pack, model, blend,
finalize, write, and the COG step, per stage.

One ``run_inference`` on a synthetic raster with the pipeline's stage functions wrapped by
timers. For each stage: the wall seconds its calls took (summed over threads: stages on the
reader, model and writer threads overlap, so the rows add up to more than the run) and the
CPU seconds of the threads that ran them (``thread_time``), which is what the stages take from
the two cores the model wants. ``model`` is the session's calls (onnxruntime's own threads are
not in its CPU column). Usage:

    python benchmarks/stages_bench.py out/demo/bundle --size 4096 [--precision int8] -o out/stages
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_synthetic  # noqa: E402


class Stopwatch:
    """Wall and thread-CPU seconds per stage, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, stage: str, func):
        def timed(*args, **kwargs):
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                with self.lock:
                    self.wall[stage] += time.perf_counter() - w0
                    self.cpu[stage] += time.thread_time() - c0
                    self.calls[stage] += 1
        return timed


def instrument(watch: Stopwatch) -> None:
    """Wrap the pipeline's stage functions where the pipeline looks them up."""
    from lulc.runtime import pipeline, session
    from lulc.runtime.io import writer

    pipeline.read_padded = watch.wrap("read", pipeline.read_padded)
    pipeline.BlockRunner.pack = watch.wrap("pack", pipeline.BlockRunner.pack)
    pipeline.BlockRunner.compute = watch.wrap("blend (incl. waiting for the model)", pipeline.BlockRunner.compute)
    pipeline.BlockRunner.finalize = watch.wrap("finalize", pipeline.BlockRunner.finalize)
    writer.PartialMap.write_block = watch.wrap("write", writer.PartialMap.write_block)
    writer.PartialMap.sync = watch.wrap("write", writer.PartialMap.sync)
    writer.write_cog = watch.wrap("COG (overviews, compress, verify)", writer.write_cog)
    real_prepare = session.prepare

    def prepare(*args, **kwargs):
        s = real_prepare(*args, **kwargs)
        s.run = watch.wrap("model", s.run)
        return s

    session.prepare = prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("-o", "--output", default="out/stages")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    raster = write_synthetic(out / f"synthetic_{args.size}.tif", args.size, args.bundle)
    try:
        from lulc.runtime.infer import run_inference
        from lulc.runtime.options import InferOptions

        watch = Stopwatch()
        instrument(watch)
        t0, c0 = time.perf_counter(), time.process_time()
        summary = run_inference(args.bundle, raster, out / "map.tif",
                                InferOptions(precision=args.precision, overwrite=True, progress=False))
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        raster.unlink(missing_ok=True)
    rows = [{"stage": s, "wall_s": round(watch.wall[s], 3), "thread_cpu_s": round(watch.cpu[s], 3), "calls": watch.calls[s]}
            for s in watch.wall]
    result = {"size": args.size, "precision": summary.precision, "device": summary.device, "run_s": round(total, 2),
              "process_cpu_s": round(cpu, 2), "stages": rows}
    (out / "stages.json").write_text(json.dumps(result, indent=2))
    lines = [f"{args.size}² {summary.precision} on {summary.device}: run {total:.2f} s, process CPU {cpu:.2f} s", "",
             "| stage | wall s (summed) | thread CPU s | calls |", "|---|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['wall_s']} | {r['thread_cpu_s']} | {r['calls']} |" for r in rows]
    (out / "stages.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
