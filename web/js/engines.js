// Model engines for the page: TF.js (graph model) and onnxruntime-web, behind one interface:
// `await engine.run(batch, n, size, channels)` -> Float32Array of (n, size, size, classes).
//
// Libraries load on demand from web/node_modules (served by `lulc serve`), never from a CDN,
// so the page works offline and only pays for the engine it uses.

import { DemoError } from './raster.js';

const LIB = new URL('../node_modules/', import.meta.url).href;

function loadScript(path) {
  return new Promise((resolve, reject) => {
    const el = document.createElement('script');
    el.src = LIB + path;
    el.onload = resolve;
    el.onerror = () => reject(new DemoError(`cannot load ${path}: run \`npm ci --prefix web\``));
    document.head.append(el);
  });
}

/** True when WebGL runs on a software rasteriser (headless, no GPU): WASM is faster there. */
function softwareWebGL() {
  const gl = document.createElement('canvas').getContext('webgl2');
  if (!gl) return true;
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  const renderer = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : '';
  return /swiftshader|llvmpipe|software/i.test(renderer);
}

/** True when the browser has a WebGPU adapter on real hardware (not SwiftShader's CPU fallback,
 * which headless Chromium offers with --enable-unsafe-swiftshader: correct, but slower than WASM). */
async function hasHardwareWebGPU() {
  try {
    const adapter = navigator.gpu && await navigator.gpu.requestAdapter();
    if (!adapter) return false;
    const info = adapter.info ?? {};
    const name = `${info.vendor ?? ''} ${info.architecture ?? ''} ${info.device ?? ''} ${info.description ?? ''}`;
    return !(adapter.isFallbackAdapter || info.isFallbackAdapter || /swiftshader|llvmpipe|software/i.test(name));
  } catch {
    return false;
  }
}

/** Backends to try in order: the user's choice, or the fastest the browser really has. */
async function backendOrder(preference, supported) {
  if (preference !== 'auto') {
    if (!supported.includes(preference)) throw new DemoError(`this engine has no ${preference} backend (try ${supported.join(', ')})`);
    return [preference];
  }
  const order = [];
  if (await hasHardwareWebGPU()) order.push('webgpu');
  if (!softwareWebGL()) order.push('webgl');
  order.push('wasm', 'cpu');
  return order.filter((b) => supported.includes(b));
}

function threads() {
  // Threads need SharedArrayBuffer, which needs the COOP/COEP headers `lulc serve` sends.
  return self.crossOriginIsolated ? navigator.hardwareConcurrency || 1 : 1;
}

async function tfjsEngine(modelUrl, preference) {
  await loadScript('@tensorflow/tfjs/dist/tf.min.js');
  await loadScript('@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js');
  const order = await backendOrder(preference, ['webgpu', 'webgl', 'wasm', 'cpu']);
  if (order.includes('webgpu')) await loadScript('@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js');
  tf.wasm.setWasmPaths(`${LIB}@tensorflow/tfjs-backend-wasm/dist/`);
  tf.wasm.setThreadsCount?.(threads());
  let backend = null;
  for (const b of order) {
    if (await tf.setBackend(b).catch(() => false)) { backend = b; break; }
  }
  if (!backend) throw new DemoError(`no TF.js backend of ${order.join(', ')} starts in this browser`);
  await tf.ready();
  const model = await tf.loadGraphModel(modelUrl);
  return {
    label: `TF.js ${tf.version.tfjs} ${backend}${backend === 'wasm' ? ` (${threads()} threads)` : ''}`,
    async run(batch, n, size, channels) {
      const out = tf.tidy(() => {
        const y = model.execute(tf.tensor4d(batch, [n, size, size, channels]));
        return Array.isArray(y) ? y[0] : y;
      });
      const data = await out.data();
      out.dispose();
      return data;
    },
  };
}

async function onnxEngine(modelUrl, preference) {
  const ort = await import(`${LIB}onnxruntime-web/dist/ort.min.mjs`);
  ort.env.wasm.wasmPaths = `${LIB}onnxruntime-web/dist/`;
  ort.env.wasm.numThreads = threads();
  // Warnings go to console.error in the browser; ORT warns, e.g., that it keeps shape ops on the
  // CPU next to the WebGPU provider, which is by design. Errors still reach the page as exceptions.
  ort.env.logLevel = 'error';
  const order = await backendOrder(preference, ['webgpu', 'wasm']);
  const errors = [];
  for (const backend of order) {
    try {
      const session = await ort.InferenceSession.create(modelUrl, { executionProviders: [backend], graphOptimizationLevel: 'all', logSeverityLevel: 3 });
      const [input] = session.inputNames;
      const [output] = session.outputNames;
      return {
        label: `onnxruntime-web ${ort.env.versions?.web ?? ''} ${backend}${backend === 'wasm' ? ` (${threads()} threads)` : ''}`,
        async run(batch, n, size, channels) {
          const result = await session.run({ [input]: new ort.Tensor('float32', batch, [n, size, size, channels]) });
          return result[output].data;
        },
      };
    } catch (err) {
      errors.push(`${backend}: ${err.message}`);
    }
  }
  throw new DemoError(`onnxruntime-web cannot run the model (${errors.join('; ')})`);
}

/** Load the bundle's artefact for ``kind`` ('tfjs' or 'onnx') on the preferred backend. */
export async function createEngine(kind, bundleUrl, manifest, preference = 'auto') {
  const art = manifest.artifacts[kind];
  if (!art) throw new DemoError(`the bundle has no ${kind} artefact (run \`lulc export --target ${kind}\`)`);
  const url = new URL(art.path, bundleUrl).href;
  if (kind === 'tfjs') return tfjsEngine(url.endsWith('.json') ? url : `${url}/model.json`, preference);
  return onnxEngine(url, preference);
}
