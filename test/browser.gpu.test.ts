// kiln in a real browser: `kiln serve examples/browser` in-process, Chromium (Debian's, WebGPU on
// SwiftShader) driven by playwright-core: the automatic load and generation, the PyTorch fixture run
// through kiln inside the page.
// No WebGPU adapter is a failure with the reason, never a skip: the browser is where WebGPU lives.
// What the page is served (the bundle, the checkpoint), without a browser: browser-bundle.test.ts.

import { mkdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningServer, startServer } from '../compiler/cli/serve.ts';
import type { KilnTestResult } from '../examples/browser/main.ts';
import { FIXTURE_WEIGHTS, asNumbers, loadFixture, relError } from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
// The combination that gives navigator.gpu a SwiftShader (Vulkan on the CPU) adapter in a container.
const CHROMIUM_ARGS = [
  '--enable-unsafe-webgpu', '--no-sandbox', '--headless=new', '--disable-gpu-sandbox', '--use-angle=swiftshader',
  '--enable-features=Vulkan', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
];
const SCREENSHOT = 'test-artifacts/browser.png';

type Browser = import('playwright-core').Browser;
type Page = import('playwright-core').Page;

async function launchChromium(): Promise<Browser> {
  let playwright: typeof import('playwright-core');
  try {
    playwright = await import('playwright-core');
  } catch (e) {
    throw new Error(`playwright-core is not installed (npm install --save-dev playwright-core): ${(e as Error).message}`);
  }
  try {
    return await playwright.chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  } catch (e) {
    throw new Error(`could not start ${CHROMIUM} (apt-get install chromium libvulkan1): ${(e as Error).message.split('\n')[0]}`);
  }
}

/** Fails with what the browser said when it has no WebGPU adapter. */
async function requireAdapter(page: Page): Promise<void> {
  const why = await page.evaluate(async () => {
    if (!window.isSecureContext) return `not a secure context (${location.origin})`;
    if (!navigator.gpu) return 'navigator.gpu is missing (is --enable-unsafe-webgpu honoured?)';
    const adapter = await navigator.gpu.requestAdapter();
    return adapter ? null : 'navigator.gpu.requestAdapter() returned null (no Vulkan/SwiftShader adapter)';
  });
  if (why) throw new Error(`Chromium has no WebGPU adapter with ${CHROMIUM_ARGS.join(' ')}: ${why}`);
}

describe('kiln in the browser (Chromium, WebGPU on SwiftShader)', () => {
  let server: RunningServer;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    server = await startServer('examples/browser', 0);
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => void (m.type() === 'error' && pageErrors.push(m.text())));
    await page.goto(server.url);
    // The page bundles kiln on first load: on a busy 2-core machine (the whole suite in parallel) that took over 20 s once.
    await page.waitForFunction(() => typeof window.kilnTest === 'function', null, { timeout: 90_000 });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('loads the shipped Shakespeare model as the page opens, and explains fusion at model.ts lines through the source map', async () => {
    await requireAdapter(page);
    await page.waitForFunction(() => document.getElementById('status')!.textContent!.includes('compiled in'), null, { timeout: 90_000 });
    expect(await page.textContent('#status')).toMatch(/^checkpoint\.safetensors: \d+ layers, .* vocab 65; compiled in/);
    expect(await page.locator('#graph svg').count()).toBe(1);
    const explain = (await page.textContent('#explain'))!;
    expect(explain).toMatch(/(\d+) attention sites: \1 fused/);
    // the user's file and line, as the CLI shows them, and its source line from the map's sourcesContent
    expect(explain).toMatch(/^FUSED\s+transformer\.h\.0\.attn\s+examples\/nanogpt\/model\.ts:\d+:\d+ /m);
    expect(explain).toMatch(/^\s+>\s*\d+ \| \S/m);
    expect(explain).not.toMatch(/main\.js/);
    expect(await page.isHidden('#error')).toBe(true);
  });

  it('starts generating from the prompt once the model is loaded, with no click, and stops on Stop', async () => {
    // nothing here clicks Generate: the page's own generation writes the first token after the prompt
    await page.waitForFunction(() => /\(\d+\)$/.test(document.getElementById('compiled-mean')!.textContent!), null, { timeout: 90_000 });
    const prompt = (await page.inputValue('#prompt'))!;
    const text = (await page.textContent('#text'))!;
    expect(text.startsWith(prompt)).toBe(true);
    expect(text.length).toBeGreaterThanOrEqual(prompt.length + 1);
    expect(await page.textContent('#compiled-mean')).toMatch(/ms\/token, [\d.]+ tokens\/s \([1-9]\d*\)$/);
    // the default is 200 tokens, minutes on SwiftShader: stop it, and Generate is back for the tests below
    await page.click('#stop');
    await page.waitForSelector('#generate:not([disabled])', { timeout: 90_000 });
    expect(await page.isDisabled('#stop')).toBe(true);
  });

  it('runs the PyTorch nanoGPT fixture in the page, compiled and eager, within 1e-4 of PyTorch', async () => {
    await requireAdapter(page);
    const { expected } = await loadFixture();
    const idx = expected.get('idx')!;
    const checkpoint = readFileSync(FIXTURE_WEIGHTS).toString('base64');
    const input = { idx: Array.from(asNumbers(idx.data)), targets: Array.from(asNumbers(expected.get('targets')!.data)), shape: idx.type.shape as [number, number], checkpoint };
    const result: KilnTestResult = await page.evaluate((i) => window.kilnTest(i), input);
    const logits = expected.get('logits')!;
    expect(result.shape).toEqual([...logits.type.shape]);
    expect(relError(result.compiled, asNumbers(logits.data))).toBeLessThan(1e-4);
    expect(relError(result.eager, asNumbers(logits.data))).toBeLessThan(1e-4);
  });

  it('generates from the loaded model with both timings, in tokens per second', async () => {
    const prompt = (await page.inputValue('#prompt'))!;
    await page.fill('#count', '2');
    await page.click('#generate');
    await page.waitForFunction(() => document.getElementById('compiled-mean')!.textContent!.includes('(2)'), null, { timeout: 90_000 });
    const text = (await page.textContent('#text'))!;
    expect(text.length).toBe(prompt.length + 2);
    expect(text.startsWith(prompt)).toBe(true);
    const times = { compiled: await page.textContent('#compiled-mean'), eager: await page.textContent('#eager-mean') };
    console.log(`browser per token: compiled ${times.compiled}, eager ${times.eager}`);
    expect(times.compiled).toMatch(/ms\/token, [\d.]+ tokens\/s \(2\)/);
    expect(times.eager).toMatch(/ms\/token, [\d.]+ tokens\/s \(2\)/);
    mkdirSync('test-artifacts', { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(await page.isHidden('#error')).toBe(true);
    expect(pageErrors).toEqual([]);
  });

  it('says which browser or flag gives WebGPU when navigator.gpu is missing', async () => {
    const bare = await browser.newPage();
    await bare.addInitScript(() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined }));
    await bare.goto(server.url);
    await bare.waitForSelector('#error:not([hidden])', { timeout: 20_000 });
    const message = (await bare.textContent('#error'))!;
    expect(message).toMatch(/^KILN_E007 this browser has no WebGPU/);
    expect(message).toMatch(/Chrome or Edge 113 or later/);
    expect(message).toMatch(/--enable-unsafe-webgpu/);
    await bare.close();
  });

  it('shows KILN_E006 and what to do when the checkpoint does not fit the config', async () => {
    await page.fill('#config', '{"n_layer":1}');
    await page.click('#load-shipped');
    await page.waitForSelector('#error:not([hidden])', { timeout: 20_000 });
    const message = (await page.textContent('#error'))!;
    expect(message).toMatch(/^KILN_E006 checkpoint\.safetensors: unexpected key "transformer\.h\.1\./);
    expect(message).toMatch(/check the "Config" box/);
  });
});
