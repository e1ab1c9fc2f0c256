// Run a TF.js graph model in Node on raw float32 tiles, for `lulc export --target tfjs`'s parity gate.
//
// Usage: node web/tools/tfjs_parity.mjs MODEL_DIR INPUT.f32 N,H,W,C OUTPUT.f32
// Uses the pure-JS CPU backend (no tfjs-node binaries), i.e. the same kernels a browser
// falls back to, so a pass here means the graph and weights themselves are right.
//
// TF.js is loaded from the browser bundle the page uses (node_modules/@tensorflow/tfjs/dist/
// tf.min.js, a UMD file listed in web/vendor.txt), not from the npm package's Node entry:
// that one file is in a checkout after `npm ci --prefix web` and in the installed wheel
// (lulc/web/node_modules/...), so the gate runs wherever lulc is installed and `node` is.
import { readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const tf = require('../node_modules/@tensorflow/tfjs/dist/tf.min.js');

const [modelDir, inputPath, shapeArg, outputPath] = process.argv.slice(2);
if (!outputPath) {
  console.error('usage: node tfjs_parity.mjs MODEL_DIR INPUT.f32 N,H,W,C OUTPUT.f32');
  process.exit(2);
}

// tf.loadGraphModel only reads http(s) URLs in Node without tfjs-node: hand it the files.
async function loadFromDisk(dir) {
  const json = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8'));
  const weightSpecs = [];
  const shards = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) shards.push(new Uint8Array(await readFile(path.join(dir, p))));
  }
  const weightData = new Uint8Array(shards.reduce((n, s) => n + s.length, 0));
  shards.reduce((offset, s) => (weightData.set(s, offset), offset + s.length), 0);
  return tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: json.modelTopology, weightSpecs, weightData: weightData.buffer,
    format: json.format, generatedBy: json.generatedBy, convertedBy: json.convertedBy,
    signature: json.signature, userDefinedMetadata: json.userDefinedMetadata,
  }));
}

await tf.setBackend('cpu');
const model = await loadFromDisk(modelDir);
const shape = shapeArg.split(',').map(Number);
const raw = await readFile(inputPath);
const x = tf.tensor(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), shape, 'float32');
const y = model.predict(x);
const probs = await y.data();
await writeFile(outputPath, Buffer.from(probs.buffer, probs.byteOffset, probs.byteLength));
console.log(JSON.stringify({ backend: tf.getBackend(), tfjs: tf.version.tfjs, shape: y.shape }));
