// kiln in the browser: load a nanoGPT checkpoint, compile it for this browser's WebGPU, show the fused
// graph and what fusion decided, and generate text while timing compiled against eager. The same kiln
// code as in Node: `kiln serve examples/browser` bundles this file with esbuild (platform browser).

import { instance as vizInstance } from '@viz-js/viz';
import { type CompiledModel, KilnError, type Tensor, compile, tensor, useBackend } from 'kiln';
import createModel, { type GPT } from 'kiln/examples/nanogpt/model.ts';
import { configOf, hostTensors } from '../../compiler/checkpoint.ts';
import { formatSite, siteReport, summary } from '../../compiler/cli/explain-report.ts';
import { graphToDot } from '../../compiler/cli/graph-formats.ts';
import { parseSafetensors } from '../../runtime/safetensors.ts';
import { getDevice } from '../../runtime/webgpu/device.ts';

const SHIPPED = 'checkpoint.safetensors';

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;

// ---- errors a person can act on ----

/** What to do about a failure, after kiln's own one-line message. */
function advice(e: unknown): string {
  const code = e instanceof KilnError ? e.code : '';
  if (code === 'KILN_E007') return webGpuHelp();
  if (code === 'KILN_E008') return 'The GPU adapter was lost (driver reset, GPU process crash or tab in the background too long): load the checkpoint again to recompile on a new device.';
  if (code === 'KILN_E006') return 'The checkpoint does not fit the model the config describes: check the "Config" box against the checkpoint (its __metadata__.config is used when the box is {}).';
  if (code === 'KILN_E005') return 'The file is not a nanoGPT safetensors checkpoint kiln can read.';
  return '';
}

function webGpuHelp(): string {
  if (!window.isSecureContext) return `WebGPU needs a secure context: open this page as http://127.0.0.1 or http://localhost (as kiln serve prints it) or over https, not ${location.origin}.`;
  return [
    'This browser gives no WebGPU adapter. Use Chrome or Edge 113 or later (Windows, macOS, ChromeOS, Android).',
    'On Linux, start Chrome with --enable-unsafe-webgpu --enable-features=Vulkan (or enable chrome://flags/#enable-unsafe-webgpu);',
    'Firefox 141+ has WebGPU on Windows, Safari 26+ on macOS. Check chrome://gpu for "WebGPU: Hardware accelerated".',
  ].join('\n');
}

function showError(e: unknown): void {
  const message = e instanceof Error ? e.message.split('\n')[0] : String(e);
  const help = advice(e);
  const box = $('error');
  box.textContent = help ? `${message}\n\n${help}` : message;
  box.hidden = false;
  console.error(e);
}

function clearError(): void {
  $('error').hidden = true;
}

/** navigator.gpu present, or an error that says which browser or flag gives it. */
function requireWebGpu(): void {
  if (!navigator.gpu) throw new KilnError('KILN_E007', 'this browser has no WebGPU (navigator.gpu is missing)');
}

// ---- load, compile, show ----

/** The model of a checkpoint: its __metadata__.config merged with the page's config, weights loaded (E006 when they do not fit). */
export function modelFromCheckpoint(bytes: Uint8Array, fileName: string, configText: string): GPT {
  const file = parseSafetensors(bytes, fileName);
  const config = { ...configOf(file, fileName), ...parseConfig(configText) };
  if (typeof config.vocab_size !== 'number' || typeof config.block_size !== 'number') {
    throw new KilnError('KILN_E005', `bad checkpoint ${fileName}: its __metadata__.config (or the config box) must give vocab_size and block_size`);
  }
  const model = createModel(config);
  model.loadStateDict(hostTensors(file, fileName), fileName);
  return model.eval() as GPT;
}

function parseConfig(text: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(text || '{}');
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new KilnError('KILN_E015', `the config box must hold a JSON object, got ${text}`);
}

interface Loaded {
  model: GPT;
  compiled: CompiledModel<GPT>;
}

let loaded: Loaded | null = null;

/** Compiles for the window generation feeds (one [1, block_size] signature, so one trace), shows graph and explain. */
async function prepare(model: GPT, name: string): Promise<Loaded> {
  requireWebGpu();
  $('status').textContent = `${name}: compiling for WebGPU…`;
  await useBackend('webgpu'); // eager ops on the GPU too, for the side-by-side timing
  const { device } = await getDevice();
  void device.lost.then((info) => {
    if (info.reason !== 'destroyed') showError(new KilnError('KILN_E008', `the WebGPU device was lost (${info.reason}): ${info.message}`));
  });
  const compiled = compile(model, { backend: 'webgpu' });
  const example = windowOf([], model.config.block_size);
  const t0 = performance.now();
  const compilation = await compiled.lower(example.idx, example.targets);
  const ms = performance.now() - t0;
  const fused = compilation.passes.stages.get('fused') ?? compilation.passes.graph;
  const sites = compilation.passes.decisions.filter((d) => d.pass === 'fuse_attention').map((d) => siteReport(d, null));
  $('explain').textContent = [...sites.map((s) => formatSite(s, null)), '', summary(sites)].join('\n');
  const viz = await vizInstance();
  $('graph').replaceChildren(viz.renderSVGElement(graphToDot(fused, `${name}: fused graph`)));
  const c = model.config;
  $('status').textContent = `${name}: ${c.n_layer} layers, ${c.n_head} heads, n_embd ${c.n_embd}, vocab ${c.vocab_size}; compiled in ${ms.toFixed(0)} ms (${fused.nodes.length} nodes after fusion).`;
  return { model, compiled };
}

async function load(bytes: Uint8Array, name: string): Promise<void> {
  clearError();
  loaded = null;
  $<HTMLButtonElement>('generate').disabled = true;
  try {
    const model = modelFromCheckpoint(bytes, name, $<HTMLInputElement>('config').value);
    loaded = await prepare(model, name);
    $<HTMLButtonElement>('generate').disabled = false;
  } catch (e) {
    $('status').textContent = `${name}: not loaded.`;
    showError(e);
  }
}

async function fetchShipped(): Promise<Uint8Array> {
  const res = await fetch(SHIPPED);
  if (!res.ok) throw new Error(`could not fetch ${SHIPPED}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

// ---- generate ----

/** Token i is the character 32 + i (96 printable ASCII codes; 127, DEL, shows as ␡). */
const tokenChar = (t: number): string => (t === 95 ? '␡' : String.fromCharCode(32 + t));
const charToken = (ch: string, vocab: number): number => Math.min(vocab - 1, Math.max(0, ch.charCodeAt(0) - 32));

/**
 * The last block_size tokens, padded on the right to block_size: causal attention makes the logits at
 * position n - 1 independent of the padding, and one shape means one compilation for every step.
 * Targets ask nanoGPT for the logits of every position (without them it keeps only the last).
 */
function windowOf(tokens: readonly number[], blockSize: number): { idx: Tensor; targets: Tensor; last: number } {
  const ctx = tokens.slice(-blockSize);
  const padded = [...ctx, ...new Array<number>(blockSize - ctx.length).fill(0)];
  return { idx: tensor(padded, [1, blockSize], 'i32'), targets: tensor(padded, [1, blockSize], 'i32'), last: Math.max(ctx.length - 1, 0) };
}

async function timedLogits(forward: () => Promise<{ logits: Tensor }> | { logits: Tensor }, at: number, vocab: number): Promise<{ row: Float32Array; ms: number }> {
  const t0 = performance.now();
  const { logits } = await forward();
  const all = await logits.data();
  const ms = performance.now() - t0;
  return { row: Float32Array.from(all.subarray(at * vocab, (at + 1) * vocab)), ms };
}

function sample(row: Float32Array, temperature = 0.8): number {
  const max = Math.max(...row);
  const p = Array.from(row, (l) => Math.exp((l - max) / temperature));
  let u = Math.random() * p.reduce((a, b) => a + b, 0);
  for (let i = 0; i < p.length; i++) if ((u -= p[i]) < 0) return i;
  return p.length - 1;
}

let stopRequested = false;

async function generate(): Promise<void> {
  if (!loaded) return;
  const { model, compiled } = loaded;
  const { block_size: blockSize, vocab_size: vocab } = model.config;
  clearError();
  stopRequested = false;
  $<HTMLButtonElement>('generate').disabled = true;
  $<HTMLButtonElement>('stop').disabled = false;
  const prompt = $<HTMLInputElement>('prompt').value || ' ';
  const tokens = Array.from(prompt, (ch) => charToken(ch, vocab));
  $('text').textContent = tokens.map(tokenChar).join('');
  const total = { compiled: 0, eager: 0 };
  const count = Number($<HTMLInputElement>('count').value) || 64;
  try {
    for (let step = 1; step <= count && !stopRequested; step++) {
      const w = windowOf(tokens, blockSize);
      const fast = await timedLogits(() => compiled(w.idx, w.targets), w.last, vocab);
      const slow = await timedLogits(() => model.forward(w.idx, w.targets), w.last, vocab);
      total.compiled += fast.ms;
      total.eager += slow.ms;
      tokens.push(sample(fast.row));
      $('text').textContent += tokenChar(tokens[tokens.length - 1]);
      $('compiled-last').textContent = `${fast.ms.toFixed(1)} ms`;
      $('eager-last').textContent = `${slow.ms.toFixed(1)} ms`;
      $('compiled-mean').textContent = `${(total.compiled / step).toFixed(1)} ms/token (${step})`;
      $('eager-mean').textContent = `${(total.eager / step).toFixed(1)} ms/token (${step})`;
    }
  } catch (e) {
    showError(e);
  } finally {
    $<HTMLButtonElement>('generate').disabled = false;
    $<HTMLButtonElement>('stop').disabled = true;
  }
}

// ---- the test hook (test/browser.gpu.test.ts) ----

export interface KilnTestResult {
  compiled: number[];
  eager: number[];
  shape: number[];
  adapter: string;
}

/** Runs the shipped checkpoint on idx and targets [B, T], compiled and eager, and returns the logits. */
async function kilnTest(input: { idx: number[]; targets: number[]; shape: [number, number] }): Promise<KilnTestResult> {
  requireWebGpu();
  const model = modelFromCheckpoint(await fetchShipped(), SHIPPED, '{}');
  await useBackend('webgpu');
  const idx = tensor(input.idx, input.shape, 'i32');
  const targets = tensor(input.targets, input.shape, 'i32');
  const { logits } = await compile(model, { backend: 'webgpu' })(idx, targets);
  const eager = model.forward(idx, targets).logits;
  return { compiled: Array.from(await logits.data()), eager: Array.from(await eager.data()), shape: [...logits.shape], adapter: (await getDevice()).description };
}

declare global {
  interface Window {
    kilnTest: typeof kilnTest;
    kilnGenerate: () => Promise<void>;
  }
}
window.kilnTest = kilnTest;
window.kilnGenerate = generate;

// ---- wiring ----

$('load-shipped').addEventListener('click', () => void fetchShipped().then((b) => load(b, SHIPPED), showError));
$<HTMLInputElement>('file').addEventListener('change', (ev) => {
  const file = (ev.target as HTMLInputElement).files?.[0];
  if (file) void file.arrayBuffer().then((b) => load(new Uint8Array(b), file.name), showError);
});
$('generate').addEventListener('click', () => void generate());
$('stop').addEventListener('click', () => (stopRequested = true));
window.addEventListener('unhandledrejection', (ev) => showError(ev.reason));

try {
  requireWebGpu();
  $('status').textContent = 'WebGPU is available. Load a checkpoint.';
} catch (e) {
  showError(e);
}
