// What every peer (another WebGPU framework timed beside kiln) shares: WebGPU found the way a browser
// page finds it, through navigator.gpu pointed at kiln's own Dawn instance and adapter; the same
// seeded inputs as kiln's graphs; and a harness that times a peer, checks its output against kiln's,
// and turns any failure into one line of the table instead of ending the run.

import { getDevice, getGpu } from '../../../runtime/webgpu/index.ts';
import { measure } from '../measure.ts';
import { type VariantResult, oneLine } from '../results.ts';

/** Causal attention on [B, H, T, D] (heads before time, as kiln's graphs and nanoGPT lay it out). */
export interface AttentionShape {
  readonly b: number;
  readonly h: number;
  readonly t: number;
  readonly d: number;
}

/** A peer set up for one case, its inputs on its GPU. */
export interface PeerRun {
  /** Queues one run (awaited, so a peer whose API is async may wait for its own submission). */
  run(): unknown;
  /** Resolves when the GPU has finished everything queued so far. */
  done(): Promise<unknown>;
  /** The output, laid out as kiln's, for the check. */
  read(): Promise<Float32Array>;
  dispose(): unknown;
}

/** How the bench runs: smoke sizes only check that everything runs, on whatever adapter there is. */
export interface PeerSettings {
  readonly smoke: boolean;
}

/** One peer variant: a name for the table and how to set it up for a case's inputs (kiln's, by name). */
export interface PeerVariant<Shape> {
  readonly name: string;
  /** The peer's version, known once it has loaded. */
  version(): string | undefined;
  prepare(shape: Shape, inputs: ReadonlyMap<string, Float32Array>, settings: PeerSettings): Promise<PeerRun>;
}

let previousNavigator: PropertyDescriptor | undefined;
let shared = false;

/**
 * Points navigator.gpu at the GPU object kiln opens its device from (so peers get the same `webgpu`
 * package and adapter, SwiftShader included). Call before any peer loads: tfjs decides at import
 * whether WebGPU exists. Each peer still opens its own GPUDevice, so an error in a peer never reaches
 * kiln's device.
 */
export async function sharePeersKilnGpu(): Promise<void> {
  if (shared) return;
  await getDevice(); // kiln picks the adapter first (and falls back to SwiftShader when there is no GPU)
  const gpu = await getGpu();
  previousNavigator = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
  const old = (globalThis as { navigator?: { userAgent?: string } }).navigator;
  // jax-js reads navigator.userAgent (Node 20 has no navigator at all).
  const navigator = { userAgent: old?.userAgent ?? `Node.js/${process.version}`, gpu };
  Object.defineProperty(globalThis, 'navigator', { value: navigator, configurable: true, writable: true });
  shared = true;
}

/** Puts navigator back, so nothing of the bench keeps Dawn's instance alive after it. */
export function unsharePeersKilnGpu(): void {
  if (!shared) return;
  if (previousNavigator) Object.defineProperty(globalThis, 'navigator', previousNavigator);
  else delete (globalThis as { navigator?: unknown }).navigator;
  shared = false;
}

/** A buffer's f32 contents, copied back from any device (peers hold their own). */
export async function readF32(device: GPUDevice, buffer: GPUBuffer, byteLength: number): Promise<Float32Array> {
  const staging = device.createBuffer({ size: byteLength, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, byteLength);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const data = new Float32Array(staging.getMappedRange().slice(0));
  staging.unmap();
  staging.destroy();
  return data;
}

/** [B, H, T, D] -> [B, T, H, D] (toHeadsFirst is the inverse): the layout of jax-js and onnxruntime. */
export function toTimeFirst(x: Float32Array, { b, h, t, d }: AttentionShape): Float32Array<ArrayBuffer> {
  const out = new Float32Array(x.length);
  for (let bi = 0; bi < b; bi++)
    for (let hi = 0; hi < h; hi++)
      for (let ti = 0; ti < t; ti++) out.set(x.subarray(((bi * h + hi) * t + ti) * d, ((bi * h + hi) * t + ti + 1) * d), ((bi * t + ti) * h + hi) * d);
  return out;
}

export function toHeadsFirst(x: Float32Array, { b, h, t, d }: AttentionShape): Float32Array {
  const out = new Float32Array(x.length);
  for (let bi = 0; bi < b; bi++)
    for (let hi = 0; hi < h; hi++)
      for (let ti = 0; ti < t; ti++) out.set(x.subarray(((bi * t + ti) * h + hi) * d, ((bi * t + ti) * h + hi + 1) * d), ((bi * h + hi) * t + ti) * d);
  return out;
}

// f32 attention over T = 1024 and a 4096-deep matmul differ from kiln's by ~1e-5 when right; wrong is ~0.1.
const TOLERANCE = 1e-3;

/** `max |diff| 3e-7` against kiln's output, or `WRONG: ...` past the tolerance. */
export function compareWithKiln(out: Float32Array, reference: Float32Array): string {
  if (out.length !== reference.length) return `WRONG: ${out.length} values, kiln has ${reference.length}`;
  let worst = 0;
  for (let i = 0; i < out.length; i++) {
    const diff = Math.abs(out[i] - reference[i]);
    if (!(diff <= worst)) worst = diff; // NaN counts as the worst
  }
  const text = `max |diff| vs kiln ${worst.toExponential(1)}`;
  return worst <= TOLERANCE ? text : `WRONG: ${text}`;
}

/**
 * Times one peer variant on one case; whatever goes wrong becomes `failed: <one line>`. The peers run in
 * f32 (kiln's f32 inputs and output), so their rows are named and marked f32.
 */
export async function timePeer<Shape>(
  peer: PeerVariant<Shape>,
  shape: Shape,
  inputs: ReadonlyMap<string, Float32Array>,
  reference: Float32Array,
  settings: PeerSettings,
): Promise<VariantResult> {
  let prepared: PeerRun | undefined;
  try {
    const ready = (prepared = await peer.prepare(shape, inputs, settings));
    const check = compareWithKiln(await ready.read(), reference);
    const timing = await measure(() => ready.run(), () => ready.done());
    return { name: `${peer.name} f32`, peer: true, dtype: 'f32', timing, check };
  } catch (e) {
    return { name: `${peer.name} f32`, peer: true, dtype: 'f32', failed: oneLine(e) };
  } finally {
    try {
      await prepared?.dispose();
    } catch {
      // a peer that cannot free its buffers has already been timed; its device goes with the process
    }
  }
}
