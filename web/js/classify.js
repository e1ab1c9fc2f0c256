// Tiled inference over a whole raster in the page, with progress and timing.
//
// Tiles are batched so that each model call sees about MAX_BATCH_PX pixels: small tiles
// amortise the per-call overhead, big ones keep the progress bar moving and memory low.

import {
  blendTiles, blendWeights, finalize, normalisation, packTiles, tileGrid, validMask,
} from './tiling.js';

const MAX_BATCH_PX = 256 * 256;

/** Let the browser paint the progress bar between batches. */
const yieldToPage = () => new Promise((resolve) => setTimeout(resolve, 0));

/**
 * Classify ``raster`` with ``engine``; ``onProgress(done, total)`` after each batch.
 * Returns the class map (Uint8Array, 255 = no prediction) and timing figures.
 */
export async function classify(raster, manifest, engine, onProgress = () => {}) {
  const { size, overlap } = manifest.tile;
  const { width, height, bands } = raster;
  const nPixels = width * height;
  const k = manifest.classes.length;
  const c = bands.length;
  const t0 = performance.now();
  const valid = validMask(bands, nPixels, raster.nodata);
  const norm = normalisation(manifest);
  const weight = blendWeights(size, overlap);
  const acc = new Float32Array((k + 1) * nPixels);
  const tiles = tileGrid(height, width, size, overlap);
  const perBatch = Math.max(1, Math.floor(MAX_BATCH_PX / (size * size)));
  const batch = new Float32Array(perBatch * size * size * c);
  let run = 0;
  let skipped = 0;
  let modelMs = 0;
  for (let start = 0; start < tiles.length; start += perBatch) {
    const origins = tiles.slice(start, start + perBatch);
    const counts = packTiles(raster, valid, norm, origins, size, batch);
    // All-nodata tiles never reach the model: repack only the live ones.
    const live = origins.filter((_, i) => counts[i] > 0);
    skipped += origins.length - live.length;
    if (live.length) {
      if (live.length < origins.length) packTiles(raster, valid, norm, live, size, batch);
      const tm = performance.now();
      const probs = await engine.run(batch.subarray(0, live.length * size * size * c), live.length, size, c);
      modelMs += performance.now() - tm;
      blendTiles(probs, live, size, k, weight, acc, height, width);
      run += live.length;
    }
    onProgress(Math.min(start + perBatch, tiles.length), tiles.length);
    await yieldToPage();
  }
  const classes = finalize(acc, valid, k, nPixels);
  const seconds = (performance.now() - t0) / 1000;
  return {
    classes,
    stats: {
      tilesRun: run,
      tilesSkipped: skipped,
      msPerTile: run ? modelMs / run : 0,
      seconds,
      mpixPerS: nPixels / 1e6 / seconds,
      backend: engine.label,
    },
  };
}
