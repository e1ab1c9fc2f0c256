// Show the raster and its class map on a Leaflet map, with legend, class areas and opacity.
//
// No basemap: the page must work offline, and fetching tiles would also need reprojection
// from the raster's CRS. Leaflet's CRS.Simple with the raster's own projected coordinates
// (metres east/north) keeps scale and position honest without either.

import { NODATA_CLASS } from './tiling.js';

function canvasURL(width, height, fill) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(width, height);
  fill(img.data);
  ctx.putImageData(img, 0, 0);
  return canvas.toDataURL();
}

/** Band indices for a true-colour preview: B04/B03/B02 when the bundle names them. */
function rgbBands(names) {
  const idx = ['B04', 'B03', 'B02'].map((b) => names.findIndex((n) => n.toUpperCase() === b));
  return idx.every((i) => i >= 0) ? idx : [0, 1, 2].map((i) => Math.min(i, names.length - 1));
}

/** Preview stretch per band: the training percentiles when recorded, else mean +- 2 std. */
function stretch(manifest, b) {
  const n = manifest.normalization;
  return n.p1 && n.p99 ? [n.p1[b], n.p99[b]] : [n.mean[b] - 2 * n.std[b], n.mean[b] + 2 * n.std[b]];
}

export function rgbPreview(raster, manifest) {
  const idx = rgbBands(manifest.input.bands);
  const ranges = idx.map((b) => stretch(manifest, b));
  const n = raster.width * raster.height;
  return canvasURL(raster.width, raster.height, (data) => {
    for (let p = 0; p < n; p++) {
      idx.forEach((b, ch) => {
        const [lo, hi] = ranges[ch];
        data[p * 4 + ch] = 255 * (raster.bands[b][p] - lo) / (hi - lo);
      });
      data[p * 4 + 3] = 255;
    }
  });
}

export function classPreview(classes, width, height, manifest) {
  const colors = manifest.classes.map((c) => c.color);
  return canvasURL(width, height, (data) => {
    classes.forEach((c, p) => {
      if (c === NODATA_CLASS) return; // stays transparent
      data.set(colors[c], p * 4);
      data[p * 4 + 3] = 255;
    });
  });
}

/** Map bounds [[south, west], [north, east]]: CRS coordinates when georeferenced, else pixels. */
function bounds(raster) {
  const g = raster.georef;
  if (!g) return [[-raster.height, 0], [0, raster.width]];
  const ys = [g.y0, g.y0 + g.ry * raster.height];
  const xs = [g.x0, g.x0 + g.rx * raster.width];
  return [[Math.min(...ys), Math.min(...xs)], [Math.max(...ys), Math.max(...xs)]];
}

export class MapView {
  constructor(element, coordsElement) {
    this.map = L.map(element, { crs: L.CRS.Simple, minZoom: -12, maxZoom: 6, zoomSnap: 0.25, attributionControl: false });
    this.layers = [];
    this.coords = coordsElement;
  }

  show(raster, imageUrl) {
    this.layers.forEach((l) => l.remove());
    const b = bounds(raster);
    this.bounds = b;
    this.layers = [L.imageOverlay(imageUrl, b).addTo(this.map)];
    this.map.fitBounds(b);
    const unit = raster.georef ? (raster.georef.epsg ? `EPSG:${raster.georef.epsg}` : 'map units') : 'px (not georeferenced)';
    this.map.off('mousemove');
    this.map.on('mousemove', (e) => {
      this.coords.textContent = `${e.latlng.lng.toFixed(1)} E, ${e.latlng.lat.toFixed(1)} N  ${unit}`;
    });
  }

  overlay(classUrl, opacity) {
    this.classLayer?.remove();
    this.classLayer = L.imageOverlay(classUrl, this.bounds, { opacity }).addTo(this.map);
    this.layers.push(this.classLayer);
  }

  setOpacity(opacity) {
    this.classLayer?.setOpacity(opacity);
  }
}

function formatArea(pixels, raster) {
  const g = raster.georef;
  if (!g || !g.metres) return `${pixels.toLocaleString()} px`;
  const m2 = pixels * Math.abs(g.rx * g.ry);
  return m2 >= 1e6 ? `${(m2 / 1e6).toFixed(2)} km²` : `${(m2 / 1e4).toFixed(2)} ha`;
}

/** Legend rows: colour, name, area and share of the classified pixels. */
export function renderLegend(table, classes, raster, manifest) {
  const counts = new Array(manifest.classes.length).fill(0);
  let total = 0;
  classes.forEach((c) => { if (c !== NODATA_CLASS) { counts[c]++; total++; } });
  table.replaceChildren(...manifest.classes.map((cls, i) => {
    const row = document.createElement('tr');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = `rgb(${cls.color.join(',')})`;
    const share = total ? (100 * counts[i] / total).toFixed(1) : '0.0';
    [swatch, cls.name, formatArea(counts[i], raster), `${share} %`].forEach((content, col) => {
      const cell = row.insertCell();
      cell.append(content);
      if (col >= 2) cell.className = 'num';
    });
    return row;
  }));
}
