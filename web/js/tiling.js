// Tiling, nodata, normalisation and blending rules of `lulc-infer`, mirrored for the page.
//
// The page must give the same class map as the Python runtime (runtime/tiling.py and the
// reference_* functions of runtime/kernels.py), so every rule is copied, float32 rounding
// included (Math.fround where NumPy/Numba compute in float32). The page keeps whole-raster
// accumulators instead of streaming blocks: the sum per pixel is the same, only the order
// of float32 additions differs, which can flip an argmax only on exact near-ties.

/** Class value of pixels without a prediction (nodata or never covered by a tile). */
export const NODATA_CLASS = 255;

/** Tile origins along one axis covering [0, length); the last tile may overhang. */
export function tileOrigins(length, size, stride) {
  const count = length <= size ? 1 : Math.ceil((length - size) / stride) + 1;
  return Array.from({ length: count }, (_, i) => i * stride);
}

/** Separable raised-cosine window (size*size, row-major), floored at 1e-3 so edges keep a weight. */
export function blendWeights(size, overlap) {
  const ramp = new Float64Array(size).fill(1);
  for (let i = 0; i < overlap; i++) {
    const edge = 0.5 - 0.5 * Math.cos(Math.PI * ((i + 0.5) / overlap));
    ramp[i] = edge;
    ramp[size - 1 - i] = edge;
  }
  for (let i = 0; i < size; i++) ramp[i] = Math.max(ramp[i], 1e-3);
  const w = new Float32Array(size * size);
  for (let i = 0; i < size; i++) for (let j = 0; j < size; j++) w[i * size + j] = ramp[i] * ramp[j];
  return w;
}

/** Valid-pixel mask (1 = valid): no band is NaN or equal to nodata (null: no nodata value). */
export function validMask(bands, nPixels, nodata) {
  const valid = new Uint8Array(nPixels).fill(1);
  for (const band of bands) {
    for (let p = 0; p < nPixels; p++) {
      const v = band[p];
      if (Number.isNaN(v) || (nodata !== null && Math.fround(v) === nodata)) valid[p] = 0;
    }
  }
  return valid;
}

/** Per-channel float32 mean and 1/std exactly as the runtime derives them from the manifest. */
export function normalisation(manifest) {
  const mean = Float32Array.from(manifest.normalization.mean);
  const invStd = Float32Array.from(manifest.normalization.std, (s) => 1 / Math.max(Math.fround(s), Math.fround(1e-6)));
  return { mean, invStd };
}

/** All tile origins [y, x] of the raster's global grid, in raster order. */
export function tileGrid(height, width, size, overlap) {
  const stride = size - overlap;
  const ys = tileOrigins(height, size, stride);
  const xs = tileOrigins(width, size, stride);
  return ys.flatMap((y) => xs.map((x) => [y, x]));
}

/**
 * Normalise tiles into an NHWC float32 batch; pixels outside the raster or invalid become 0.
 * Returns the number of valid pixels per tile so all-nodata tiles can skip the model.
 */
export function packTiles(raster, valid, norm, origins, size, out) {
  const { bands, width, height } = raster;
  const c = bands.length;
  const counts = [];
  origins.forEach(([y0, x0], n) => {
    let count = 0;
    let o = n * size * size * c;
    for (let i = 0; i < size; i++) {
      const y = y0 + i;
      for (let j = 0; j < size; j++, o += c) {
        const x = x0 + j;
        const p = y * width + x;
        if (y < height && x < width && valid[p]) {
          count++;
          for (let b = 0; b < c; b++) out[o + b] = Math.fround(Math.fround(bands[b][p] - norm.mean[b]) * norm.invStd[b]);
        } else {
          out.fill(0, o, o + c);
        }
      }
    }
    counts.push(count);
  });
  return counts;
}

/** Add weighted tile probabilities (N, T, T, K) into acc ((K + 1) planes of H*W; last = weight sum). */
export function blendTiles(probs, origins, size, k, weight, acc, height, width) {
  const plane = height * width;
  origins.forEach(([y0, x0], n) => {
    const base = n * size * size * k;
    for (let i = 0; i < size && y0 + i < height; i++) {
      for (let j = 0; j < size && x0 + j < width; j++) {
        const w = weight[i * size + j];
        const p = (y0 + i) * width + (x0 + j);
        const q = base + (i * size + j) * k;
        for (let c = 0; c < k; c++) acc[c * plane + p] += Math.fround(w * probs[q + c]);
        acc[k * plane + p] += w;
      }
    }
  });
}

/** Argmax class per pixel (first maximum wins, as np.argmax); invalid or unweighted -> 255. */
export function finalize(acc, valid, k, nPixels) {
  const classes = new Uint8Array(nPixels);
  for (let p = 0; p < nPixels; p++) {
    if (!valid[p] || acc[k * nPixels + p] <= 0) {
      classes[p] = NODATA_CLASS;
      continue;
    }
    let best = 0;
    let bestV = acc[p];
    for (let c = 1; c < k; c++) {
      const v = acc[c * nPixels + p];
      if (v > bestV) { bestV = v; best = c; }
    }
    classes[p] = best;
  }
  return classes;
}
