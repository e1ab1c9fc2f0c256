// Page wiring: load the bundle named by /demo.json, read a dropped or sample GeoTIFF,
// classify it in the page and show the result.
//
// `window.lulcDemo` exposes the state, last message and last class map so that the
// end-to-end test (web/tests/e2e.mjs) can read results back without scraping pixels.

import { classify } from './classify.js';
import { createEngine } from './engines.js';
import { DemoError, readRaster } from './raster.js';
import { classPreview, MapView, renderLegend, rgbPreview } from './view.js';

const $ = (id) => document.getElementById(id);
const demo = { state: 'loading', message: null, result: null };
window.lulcDemo = demo;

const params = new URLSearchParams(location.search);
const engines = new Map(); // "kind/backend" -> engine, so a second run skips model loading
let config;
let manifest;
let bundleUrl;
let view;

function setStatus(text) {
  $('status').textContent = text;
}

function showMessage(text) {
  $('message').textContent = text;
  $('message').hidden = !text;
  demo.message = text;
}

function showTiming(rows) {
  $('timing').replaceChildren(...Object.entries(rows).flatMap(([k, v]) => {
    const dt = document.createElement('dt');
    const dd = document.createElement('dd');
    dt.textContent = k;
    dd.textContent = v;
    return [dt, dd];
  }));
}

async function engine() {
  const key = `${$('engine').value}/${$('backend').value}`;
  if (!engines.has(key)) {
    setStatus(`Loading the ${$('engine').value} model…`);
    engines.set(key, await createEngine($('engine').value, bundleUrl, manifest, $('backend').value));
  }
  return engines.get(key);
}

async function run(name, loadBuffer) {
  if (demo.state === 'running') return;
  demo.state = 'running';
  showMessage(null);
  $('progress').value = 0;
  try {
    setStatus(`Reading ${name}…`);
    const t0 = performance.now();
    const raster = await readRaster(await loadBuffer(), name, manifest);
    const readMs = performance.now() - t0;
    view.show(raster, rgbPreview(raster, manifest));
    const eng = await engine();
    setStatus(`Classifying ${raster.width} x ${raster.height} px with ${eng.label}…`);
    const { classes, stats } = await classify(raster, manifest, eng, (done, total) => {
      $('progress').value = done / total;
      setStatus(`Tile ${done} / ${total}`);
    });
    view.overlay(classPreview(classes, raster.width, raster.height, manifest), Number($('opacity').value));
    renderLegend($('legend'), classes, raster, manifest);
    showTiming({
      backend: stats.backend,
      'ms / tile': stats.msPerTile.toFixed(1),
      'MPix/s': stats.mpixPerS.toFixed(3),
      tiles: `${stats.tilesRun} run, ${stats.tilesSkipped} skipped (nodata)`,
      'total s': stats.seconds.toFixed(2),
      'read s': (readMs / 1000).toFixed(2),
    });
    setStatus(`Done: ${name}, ${raster.width} x ${raster.height} px`);
    demo.result = { name, width: raster.width, height: raster.height, classes, stats };
    demo.state = 'done';
  } catch (err) {
    if (!(err instanceof DemoError)) console.error(err);
    showMessage(err instanceof DemoError ? err.message : `Unexpected error: ${err.message}`);
    setStatus(`Failed: ${name}`);
    demo.state = 'error';
  }
}

function runFile(file) {
  if (file) run(file.name, () => file.arrayBuffer());
}

function wireInputs() {
  $('sample').onclick = () => run(config.sample_name, async () => (await fetch(config.sample)).arrayBuffer());
  $('file').onchange = (e) => runFile(e.target.files[0]);
  const drop = $('drop');
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove('over'); runFile(e.dataTransfer.files[0]); };
  $('opacity').oninput = (e) => view.setOpacity(Number(e.target.value));
}

/** The page runs single-date segmentation on raw bands; say so instead of failing mid-run. */
function checkBundle(m) {
  if (m.task !== 'segmentation' || m.input.time_steps || m.input.derived?.length) {
    throw new DemoError(`this ${m.task} bundle${m.input.derived?.length ? ` with derived ${m.input.derived.join(', ')}` : ''} `
      + 'needs lulc-infer: the page runs single-date segmentation bundles on raw bands only');
  }
}

async function start() {
  config = await (await fetch('demo.json')).json();
  bundleUrl = new URL(config.bundle, location.href).href;
  manifest = await (await fetch(new URL('bundle.json', bundleUrl))).json();
  checkBundle(manifest);
  $('model').textContent = `${manifest.architecture}, ${manifest.input.bands.length} bands, ${manifest.classes.length} classes`;
  $('engine').replaceChildren(...config.engines.map((e) => new Option(e === 'tfjs' ? 'TF.js' : 'ONNX Runtime Web', e)));
  $('engine').value = params.get('engine') ?? config.engines[0];
  $('backend').value = params.get('backend') ?? 'auto';
  $('sample').disabled = !config.sample;
  $('sample').textContent = config.sample ? `Classify the sample scene (${config.sample_name})` : 'No sample scene served';
  view = new MapView($('map'), $('coords'));
  wireInputs();
  setStatus('Ready: drop a GeoTIFF or classify the sample scene.');
  demo.state = 'ready';
}

start().catch((err) => {
  showMessage(`Cannot start the demo: ${err.message}`);
  demo.state = 'error';
});
