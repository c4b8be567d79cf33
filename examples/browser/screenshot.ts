// The README's picture of the page: `kiln serve examples/browser` in-process, headless Chromium (WebGPU on
// SwiftShader, as test/browser.gpu.test.ts runs it) loads the shipped model, which starts generating by itself, and the top of the
// page is saved as a PNG.
// Run: node bin/run-ts.mjs examples/browser/screenshot.ts [docs/browser-page.png] [tokens]

import { chromium } from 'playwright-core';
import { startServer } from '../../compiler/cli/serve.ts';

const out = process.argv[2] ?? 'docs/browser-page.png';
const tokens = process.argv[3] ?? '160';
const ARGS = [
  '--enable-unsafe-webgpu', '--no-sandbox', '--headless=new', '--disable-gpu-sandbox', '--use-angle=swiftshader',
  '--enable-features=Vulkan', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
];

const server = await startServer('examples/browser', 0);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ARGS, headless: true });
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 1080 } });
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(server.url);
  await page.fill('#count', tokens); // before the model has compiled: the generation that starts then reads it
  await page.waitForFunction((n) => document.getElementById('compiled-mean')!.textContent!.includes(`(${n})`), tokens, { timeout: 590_000 });
  console.log(await page.textContent('#status'));
  console.log(await page.textContent('#text'));
  console.log(`compiled ${await page.textContent('#compiled-mean')}; eager ${await page.textContent('#eager-mean')}`);
  console.log((await page.textContent('#explain'))!.split('\n').slice(0, 4).join('\n'));
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await server.close();
}
