// kiln in the browser: load a nanoGPT checkpoint (the shipped char-level Shakespeare model, as the page
// opens), compile it for this browser's WebGPU, show the fused graph and what fusion decided (at the
// user's file and line, through the bundle's source map), and generate text with the KV cache
// (compileGenerator: one prefill, then one decode step per token, sampled on the GPU) while timing it
// against eager forwards of the whole window. The same kiln code as in Node: `kiln serve examples/browser` bundles this file with
// esbuild (platform browser).

// First: stacks name the original files before kiln traces anything (top-level await on main.js.map).
import { BUNDLE_ROOT, sourceMap } from './mapped-stacks.ts';
import { instance as vizInstance } from '@viz-js/viz';
import { type CompiledModel, type Generator, KilnError, type Tensor, compile, compileGenerator, tensor, useBackend } from 'kiln';
import createModel, { type GPT } from 'kiln/examples/nanogpt/model.ts';
import { configOf, hostTensors } from '../../compiler/checkpoint.ts';
import { formatSite, siteReport, summary } from '../../compiler/cli/explain-report.ts';
import { graphToDot } from '../../compiler/cli/graph-formats.ts';
import type { SourceContext } from '../../compiler/cli/source.ts';
import type { Decision } from '../../passes/index.ts';
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

/** A checkpoint's model and, when its __metadata__.chars gives them (train.ts writes it), the characters of its tokens. */
export interface LoadedCheckpoint {
  readonly model: GPT;
  readonly chars: readonly string[] | null;
}

/** The model of a checkpoint: its __metadata__.config merged with the page's config, weights loaded (E006 when they do not fit). */
export function modelFromCheckpoint(bytes: Uint8Array, fileName: string, configText: string): LoadedCheckpoint {
  const file = parseSafetensors(bytes, fileName);
  const config = { ...configOf(file, fileName), ...parseConfig(configText) };
  if (typeof config.vocab_size !== 'number' || typeof config.block_size !== 'number') {
    throw new KilnError('KILN_E005', `bad checkpoint ${fileName}: its __metadata__.config (or the config box) must give vocab_size and block_size`);
  }
  const model = createModel(config);
  model.loadStateDict(hostTensors(file, fileName), fileName);
  return { model: model.eval() as GPT, chars: charsOf(file.metadata.chars, config.vocab_size) };
}

/** train.ts's vocabulary (a JSON array of characters, by token id), or null: tokens are then ASCII from 32. */
function charsOf(raw: string | undefined, vocab: number): string[] | null {
  if (raw === undefined) return null;
  try {
    const chars: unknown = JSON.parse(raw);
    if (Array.isArray(chars) && chars.length === vocab && chars.every((c) => typeof c === 'string')) return chars as string[];
  } catch {
    // reported below
  }
  throw new KilnError('KILN_E005', `bad checkpoint: __metadata__.chars must be a JSON array of ${vocab} characters (train.ts writes it)`);
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
  generator: Generator;
  vocab: Vocabulary;
}

/** How tokens and characters map: the checkpoint's characters, or token i = the character 32 + i. */
interface Vocabulary {
  char(token: number): string;
  token(ch: string): number;
}

function vocabularyOf(chars: readonly string[] | null, size: number): Vocabulary {
  if (chars) {
    const index = new Map(chars.map((c, i) => [c, i]));
    const fallback = index.get(' ') ?? 0;
    return { char: (t) => chars[t] ?? '?', token: (ch) => index.get(ch) ?? fallback };
  }
  // 96 printable ASCII codes; 127, DEL, shows as ␡
  return { char: (t) => (t === 95 ? '␡' : String.fromCharCode(32 + t)), token: (ch) => Math.min(size - 1, Math.max(0, ch.charCodeAt(0) - 32)) };
}

/** A site's location as the page shows it: the file relative to the repository (examples/nanogpt/model.ts:96:15). */
function shownLoc(loc: string | null): string | null {
  return loc?.startsWith(BUNDLE_ROOT) ? loc.slice(BUNDLE_ROOT.length) : loc;
}

/** The user's source line under a site, from the source map's sourcesContent (the browser has no files to read). */
function siteContext(d: Decision): SourceContext | null {
  const loc = d.site.loc;
  const text = loc && (loc.text ?? sourceMap?.sourceLine(loc.file, loc.line));
  return text ? { lines: [`>${String(loc.line).padStart(4)} | ${text}`] } : null;
}

let loaded: Loaded | null = null;

/** Compiles for the window generation feeds (one [1, block_size] signature, so one trace), shows graph and explain. */
async function prepare(model: GPT, chars: readonly string[] | null, name: string): Promise<Loaded> {
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
  const generator = await compileGenerator(model, { backend: 'webgpu' });
  const ms = performance.now() - t0;
  const fused = compilation.passes.stages.get('fused') ?? compilation.passes.graph;
  const decisions = compilation.passes.decisions.filter((d) => d.pass === 'fuse_attention');
  const sites = decisions.map((d) => {
    const site = siteReport(d, null);
    return { ...site, loc: shownLoc(site.loc) };
  });
  $('explain').textContent = [...sites.map((s, i) => formatSite(s, siteContext(decisions[i]))), '', summary(sites)].join('\n');
  const viz = await vizInstance();
  $('graph').replaceChildren(viz.renderSVGElement(graphToDot(fused, `${name}: fused graph`)));
  const c = model.config;
  $('status').textContent = `${name}: ${c.n_layer} layers, ${c.n_head} heads, n_embd ${c.n_embd}, vocab ${c.vocab_size}; compiled in ${ms.toFixed(0)} ms (${fused.nodes.length} nodes after fusion).`;
  return { model, compiled, generator, vocab: vocabularyOf(chars, c.vocab_size) };
}

async function load(bytes: Uint8Array, name: string): Promise<void> {
  clearError();
  loaded = null;
  $<HTMLButtonElement>('generate').disabled = true;
  try {
    const { model, chars } = modelFromCheckpoint(bytes, name, $<HTMLInputElement>('config').value);
    loaded = await prepare(model, chars, name);
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

/** `12.3 ms/token, 81.3 tokens/s (6)`: the mean over `count` tokens. */
function perToken(ms: number, count: number): string {
  return `${(ms / count).toFixed(1)} ms/token, ${((1000 * count) / ms).toFixed(1)} tokens/s (${count})`;
}

let stopRequested = false;

/** Thrown from onToken to end a generation early (the Stop button). */
class Stopped extends Error {}

async function generate(): Promise<void> {
  if (!loaded) return;
  const { model, generator, vocab: chars } = loaded;
  const { block_size: blockSize, vocab_size: vocab } = model.config;
  clearError();
  stopRequested = false;
  $<HTMLButtonElement>('generate').disabled = true;
  $<HTMLButtonElement>('stop').disabled = false;
  const prompt = $<HTMLInputElement>('prompt').value || ' ';
  const tokens = Array.from(prompt, (ch) => chars.token(ch));
  $('text').textContent = tokens.map((t) => chars.char(t)).join('');
  for (const cell of ['compiled-last', 'eager-last', 'compiled-mean', 'eager-mean']) $(cell).textContent = '–'; // the last run's timings are not this one's
  const total = { compiled: 0, eager: 0 };
  const count = Number($<HTMLInputElement>('count').value) || 64;
  // The generator's time for a token runs from the end of the last callback to this one (its first token
  // includes the prompt's prefill); each callback then times eager's forward of the same window.
  let resumed = performance.now();
  try {
    await generator.generate(tokens.slice(-blockSize), {
      maxNewTokens: count,
      temperature: 0.8,
      topK: Math.min(200, vocab),
      seed: Math.floor(Math.random() * 2 ** 31),
      onToken: async ({ index, tokens: ids }) => {
        const fastMs = performance.now() - resumed;
        const w = windowOf(tokens, blockSize);
        const slow = await timedLogits(() => model.forward(w.idx, w.targets), w.last, vocab);
        tokens.push(ids[0]);
        total.compiled += fastMs;
        total.eager += slow.ms;
        $('text').textContent += chars.char(ids[0]);
        $('compiled-last').textContent = `${fastMs.toFixed(1)} ms`;
        $('eager-last').textContent = `${slow.ms.toFixed(1)} ms`;
        $('compiled-mean').textContent = perToken(total.compiled, index + 1);
        $('eager-mean').textContent = perToken(total.eager, index + 1);
        if (stopRequested) throw new Stopped();
        resumed = performance.now();
      },
    });
  } catch (e) {
    if (!(e instanceof Stopped)) showError(e);
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

/**
 * Runs a checkpoint (base64 safetensors bytes; the shipped one when absent) on idx and targets [B, T],
 * compiled and eager, and returns the logits.
 */
async function kilnTest(input: { idx: number[]; targets: number[]; shape: [number, number]; checkpoint?: string }): Promise<KilnTestResult> {
  requireWebGpu();
  const bytes = input.checkpoint === undefined ? await fetchShipped() : Uint8Array.from(atob(input.checkpoint), (c) => c.charCodeAt(0));
  const { model } = modelFromCheckpoint(bytes, input.checkpoint === undefined ? SHIPPED : 'test checkpoint', '{}');
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

// The shipped model loads as the page opens and starts writing once compiled: the first thing a visitor
// sees is kiln compiling it, then Shakespeare appearing with its timings (Generate writes again).
try {
  requireWebGpu();
  $('status').textContent = `WebGPU is available. Loading ${SHIPPED}…`;
  void fetchShipped().then((b) => load(b, SHIPPED)).then(() => (loaded ? generate() : undefined), showError);
} catch (e) {
  showError(e);
}
