// End-to-end run of the demo in Debian's headless Chromium (driven by tests/test_web.py).
//
// usage: node web/tests/e2e.mjs URL OUT_DIR ENGINE BACKEND [BAD_FILE ...]
// Opens the page, classifies the sample scene, and writes to OUT_DIR: classes.u8 (the class
// map as raw bytes, row-major), screenshot.png, and result.json (size, timing, the page's
// message for each BAD_FILE, browser console errors). Assertions live in the Python test,
// which compares classes.u8 with lulc-infer's output.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

// Playwright's own browser download is unavailable here: use the apt package. SwiftShader
// gives headless Chromium without a GPU a WebGL2 context and (unsafe-webgpu) a WebGPU adapter
// on the CPU: slow, but the page's GPU code paths really run. WebGPU needs a secure context,
// which http://127.0.0.1 is.
const FLAGS = ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run'];
const RUN_TIMEOUT_MS = 8 * 60 * 1000;

const [url, outDir, engine, backend, ...badFiles] = process.argv.slice(2);
await mkdir(outDir, { recursive: true });
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: FLAGS });
const consoleErrors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()); });
  page.on('pageerror', (err) => consoleErrors.push(String(err)));
  const until = (states) => page.waitForFunction((s) => s.includes(window.lulcDemo?.state), states, { timeout: RUN_TIMEOUT_MS });

  await page.goto(`${url}?engine=${engine}&backend=${backend}`);
  await until(['ready', 'error']);
  // What this browser offers, for the test's report (and to tell a missing adapter from a page bug).
  const browserGpu = await page.evaluate(async () => {
    const adapter = await navigator.gpu?.requestAdapter().catch(() => null);
    const gl = document.createElement('canvas').getContext('webgl2');
    const info = gl?.getExtension('WEBGL_debug_renderer_info');
    return {
      webgpu: Boolean(adapter),
      webgpu_adapter: adapter?.info ? `${adapter.info.vendor} ${adapter.info.architecture} ${adapter.info.description}`.trim() : null,
      webgl2: Boolean(gl),
      webgl_renderer: gl ? gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER) : null,
      cross_origin_isolated: self.crossOriginIsolated,
    };
  });
  const start = await page.evaluate(() => ({ state: window.lulcDemo.state, message: window.lulcDemo.message }));
  if (start.state !== 'ready') throw new Error(`the page did not start: ${start.message}`);
  await page.click('#sample');
  await until(['done', 'error']);
  const result = await page.evaluate(() => {
    const { state, message, result: r } = window.lulcDemo;
    if (!r) return { state, message };
    let bytes = '';
    for (let i = 0; i < r.classes.length; i += 0x8000) bytes += String.fromCharCode(...r.classes.subarray(i, i + 0x8000));
    return { state, message, width: r.width, height: r.height, stats: r.stats, classes: btoa(bytes) };
  });
  if (result.classes) await writeFile(join(outDir, 'classes.u8'), Buffer.from(result.classes, 'base64'));
  delete result.classes;
  await page.screenshot({ path: join(outDir, 'screenshot.png') });

  result.bad_files = {};
  for (const file of badFiles) {
    await page.setInputFiles('#file', file);
    await until(['done', 'error']);
    result.bad_files[file] = await page.evaluate(() => ({ state: window.lulcDemo.state, message: window.lulcDemo.message }));
    await page.evaluate(() => { window.lulcDemo.state = 'ready'; });
  }
  result.browser = browserGpu;
  result.console_errors = consoleErrors;
  await writeFile(join(outDir, 'result.json'), JSON.stringify(result, null, 2));
} finally {
  await browser.close();
}
