// Read a GeoTIFF in the page (geotiff.js) and check it against the bundle before any work.
//
// Every user mistake becomes a DemoError whose message is shown in the page, mirroring the
// one-line errors of `lulc-infer` (runtime/rasters.py), so a wrong file never ends as a
// console stack trace.

/** A problem the user can fix; app.js shows its message in the page. */
export class DemoError extends Error {}

/**
 * The page holds the whole raster and its accumulators in memory; past this many bytes a
 * tab risks being killed, so bigger rasters are refused up front with a pointer to lulc-infer.
 */
export const MEMORY_BUDGET_BYTES = 1024 ** 3;

/** Bytes the page needs: raw bands, float32 accumulators, mask, classes and two RGBA canvases. */
export function memoryNeeded(width, height, bands, classes, bytesPerSample) {
  return width * height * (bands * bytesPerSample + (classes + 1) * 4 + 2 + 8);
}

async function openTiff(buffer, name) {
  try {
    const tiff = await GeoTIFF.fromArrayBuffer(buffer);
    return await tiff.getImage(0);
  } catch (err) {
    throw new DemoError(`${name} is not a GeoTIFF (${err.message}); drop a .tif with the model's bands`);
  }
}

async function bandNames(image, count) {
  const names = [];
  for (let b = 0; b < count; b++) {
    const meta = await image.getGDALMetadata(b);
    names.push(meta && typeof meta.DESCRIPTION === 'string' ? meta.DESCRIPTION : '');
  }
  return names;
}

function checkBands(name, count, names, expected) {
  if (count !== expected.length) {
    throw new DemoError(`${name} has ${count} bands but the model expects ${expected.length} (${expected.join(', ')})`);
  }
  if (names.every(Boolean) && names.some((n, i) => n.toLowerCase() !== expected[i].toLowerCase())) {
    throw new DemoError(`${name} band names ${names.join(', ')} differ from the model's ${expected.join(', ')}; reorder the bands or rename them`);
  }
}

/** Where the raster sits: origin and pixel size in its CRS and the EPSG code, or null. */
function georeference(image) {
  try {
    const [x0, y0] = image.getOrigin();
    const [rx, ry] = image.getResolution();
    const keys = image.getGeoKeys() || {};
    const epsg = keys.ProjectedCSTypeGeoKey || keys.GeographicTypeGeoKey || null;
    const projected = Boolean(keys.ProjectedCSTypeGeoKey) && (keys.ProjLinearUnitsGeoKey ?? 9001) === 9001;
    return { x0, y0, rx, ry, epsg, metres: projected };
  } catch {
    return null; // no tie points / transformation: show the raster in pixel coordinates
  }
}

/** Read ``buffer`` (a GeoTIFF) into per-band typed arrays after checking it fits the bundle. */
export async function readRaster(buffer, name, manifest) {
  const image = await openTiff(buffer, name);
  const width = image.getWidth();
  const height = image.getHeight();
  const count = image.getSamplesPerPixel();
  const expected = manifest.input.bands;
  checkBands(name, count, await bandNames(image, count), expected);
  const bytesPerSample = (image.getBitsPerSample?.(0) ?? 16) / 8;
  const need = memoryNeeded(width, height, count, manifest.classes.length, bytesPerSample);
  if (need > MEMORY_BUDGET_BYTES) {
    throw new DemoError(`${name} is ${width} x ${height} px x ${count} bands: about ${(need / 1024 ** 2).toFixed(0)} MB, `
      + `more than the page's ${(MEMORY_BUDGET_BYTES / 1024 ** 2).toFixed(0)} MB budget; crop it or classify it with lulc-infer`);
  }
  let bands;
  try {
    bands = await image.readRasters({ interleave: false });
  } catch (err) {
    throw new DemoError(`cannot decode ${name}: ${err.message}`);
  }
  // The file's nodata wins; the bundle's is the fallback (runtime/rasters.py input_nodata).
  const fileNodata = image.getGDALNoData();
  const nodata = fileNodata ?? manifest.input.nodata ?? null;
  return { name, width, height, bands: Array.from(bands), nodata, georef: georeference(image) };
}
