// The autotuner (torch.compile's mode="max-autotune"): for each node whose lowering has alternatives
// (codegen/autotune.ts lists the sites), every candidate kernel runs on this device at the node's real
// shapes, timed by timestamp queries where the device has them, else by the wall clock; the fastest is
// recorded as the pick under the device's tuned limits (codegen/tuning.ts), which lowering then reads.
// Each request is measured once: picks are kept in memory per device, and in Node on disk, in
// KILN_CACHE_DIR (default $XDG_CACHE_HOME/kiln or ~/.cache/kiln), one file per adapter and kiln version.
// KILN_LOG=autotune logs each measurement and each pick.

import { tuningSiteOf } from '../../codegen/autotune.ts';
import { describeNode, kernelFromPlan, needsNoKernel } from '../../codegen/index.ts';
import { type Candidate, type Pick, type TuningSite, picksOf, tunedLimits, tuningKey } from '../../codegen/tuning.ts';
import type { KernelRequest } from '../../codegen/wgsl/plan.ts';
import type { Graph, Node } from '../../ir/graph.ts';
import { isNode } from '../../ir/graph.ts';
import type { KernelLimits } from '../../ir/limits.ts';
import { log } from '../../ir/log.ts';
import { nodeFs, nodePath } from '../node-only.ts';
import { allocateFor, bindingLimits, gpuBytes, releaseBuffer } from './buffers.ts';
import type { KilnDevice } from './device.ts';
import { pipelineFor } from './pipelines.ts';
import { KernelTimer } from './timing.ts';

/** Timed rounds per candidate after one warm-up round; a candidate's time is its best round. */
const ROUNDS = 3;

/** Tuned limits whose device has read the disk cache already (once per device). */
const diskRead = new WeakSet<KernelLimits>();

/** KILN_AUTOTUNE=1 (Node only): autotune when compile() or compileTrainStep() leave the option unset. */
export function autotuneFromEnv(): boolean {
  return typeof process !== 'undefined' && process.env?.KILN_AUTOTUNE === '1';
}

/**
 * Measures the candidates of every node of the graph that has some and no pick yet; returns the tuned
 * limits to lower the graph with (lowerGraph(graph, limits)).
 */
export async function autotuneGraph(kdev: KilnDevice, graph: Graph): Promise<KernelLimits> {
  const { limits, picks } = await devicePicks(kdev);
  let measured = 0;
  for (const node of graph.nodes) {
    const site = needsNoKernel(node) ? undefined : tuningSiteOf(node.op);
    if (!site) continue;
    const req: KernelRequest = { inputs: node.inputs.map((x) => (isNode(x) ? x.type : x)), attrs: node.attrs, out: node.type, limits };
    const key = tuningKey(site.op, req);
    if (picks.has(key)) continue;
    const pick = await measurePick(kdev, node, req, site);
    if (!pick) continue;
    picks.set(key, pick);
    measured++;
  }
  if (measured > 0) await savePicks(kdev);
  return limits;
}

/** This device's tuned limits and their picks, with the disk cache's read in on first use. */
export async function devicePicks(kdev: KilnDevice): Promise<{ limits: KernelLimits; picks: Map<string, Pick> }> {
  const limits = tunedLimits(kdev.limits);
  const picks = picksOf(limits);
  if (!diskRead.has(limits)) {
    diskRead.add(limits);
    for (const [key, pick] of (await diskCache(kdev, true)).picks) if (!picks.has(key)) picks.set(key, pick);
  }
  return { limits, picks };
}

/** Writes every pick of this device to its disk cache file (Node; browsers keep them in memory only). */
export async function savePicks(kdev: KilnDevice): Promise<void> {
  await (await diskCache(kdev, false)).save(picksOf(tunedLimits(kdev.limits)));
}

/**
 * Times each candidate of one request on this device and returns the pick (the fastest), or null when
 * there is nothing to choose (fewer than two candidates) or the node's tensors exceed one binding (the
 * rule picks then; split kernels are not measured).
 */
export async function measurePick(kdev: KilnDevice, node: Node, req: KernelRequest, site: TuningSite): Promise<Pick | null> {
  const candidates = site.candidates(req);
  if (candidates.length < 2) return null;
  const tensors = [...node.inputs.filter(isNode), node];
  if (tensors.some((t) => gpuBytes(t.type) > bindingLimits(kdev).maxBytes)) return null;
  const ns = await timeCandidates(kdev, node, candidates);
  const times = Object.fromEntries(candidates.map((c, i) => [c.name, ns[i]]));
  const choice = candidates[ns.indexOf(Math.min(...ns))].name;
  const rule = site.rule(req);
  const clock = kdev.device.features.has('timestamp-query') ? 'timestamp-query' : 'wall-clock';
  log('autotune', `picked ${choice} for ${describeNode(node)}`, { rule, clock, ...Object.fromEntries(Object.entries(times).map(([k, v]) => [k, `${(v / 1000).toFixed(1)}us`])) });
  return { choice, rule, ns: times, clock, from: 'measured' };
}

/** Best-of-ROUNDS nanoseconds of each candidate, all run on the same scratch buffers, interleaved round by round. */
async function timeCandidates(kdev: KilnDevice, node: Node, candidates: readonly Candidate[]): Promise<number[]> {
  const { device } = kdev;
  const kernels = candidates.map((c) => kernelFromPlan(node, c.plan(), { checkBounds: false }));
  const pipelines = await Promise.all(kernels.map((k) => pipelineFor(kdev, k)));
  const inputs = kernels[0].inputs;
  const buffers = [...inputs, node].map((x) => allocateFor(kdev, x, `autotune %${x.id}`));
  const params = kernels.map((k) => {
    const b = device.createBuffer({ size: k.params.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'autotune params' });
    device.queue.writeBuffer(b, 0, k.params.buffer, k.params.byteOffset, k.params.byteLength);
    return b;
  });
  const bindGroups = kernels.map((k, i) =>
    device.createBindGroup({
      layout: pipelines[i].layout,
      entries: k.bindings.map((b) => ({ binding: b.binding, resource: { buffer: b.kind === 'uniform' ? params[i] : buffers[b.binding - 1] } })),
      label: `autotune ${candidates[i].name}`,
    }),
  );
  const timer = new KernelTimer(kdev);
  const best = candidates.map(() => Infinity);
  try {
    for (let round = 0; round <= ROUNDS; round++) {
      const encoder = device.createCommandEncoder({ label: 'kiln autotune' });
      kernels.forEach((kernel, i) => {
        const pass = encoder.beginComputePass({ label: kernel.label, timestampWrites: timer.timestampWrites(kernel) });
        pass.setPipeline(pipelines[i].pipeline);
        pass.setBindGroup(0, bindGroups[i]);
        pass.dispatchWorkgroups(...kernel.workgroups);
        pass.end();
      });
      device.queue.submit([encoder.finish()]);
      const times = await timer.collect();
      if (round === 0) continue; // warm-up: pipelines and caches
      times.forEach((t, i) => {
        log('autotune', `measured ${candidates[i].name} for %${node.id} ${node.op}`, { round, us: (t.ns / 1000).toFixed(1) });
        best[i] = Math.min(best[i], t.ns);
      });
    }
  } finally {
    timer.destroy();
    buffers.forEach(releaseBuffer);
    params.forEach((b) => b.destroy());
  }
  await kdev.errors.check();
  return best;
}

/** The disk cache of one adapter and kiln version: its picks (when read), and how to save them. Browsers: memory only. */
interface DiskCache {
  readonly picks: ReadonlyMap<string, Pick>;
  save(picks: ReadonlyMap<string, Pick>): Promise<void>;
}

const NO_DISK: DiskCache = { picks: new Map(), save: async () => {} };

/** Where the autotune cache lives: KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln. */
export function autotuneCacheDir(): string | null {
  if (typeof process === 'undefined' || !process.env) return null;
  const env = process.env;
  if (env.KILN_CACHE_DIR) return env.KILN_CACHE_DIR;
  const base = env.XDG_CACHE_HOME ?? (env.HOME ? `${env.HOME}/.cache` : null);
  return base ? `${base}/kiln` : null;
}

/** The cache file's name: the adapter's description and kiln's version, made safe for a file name. */
export async function autotuneCacheFile(kdev: KilnDevice): Promise<string | null> {
  const dir = autotuneCacheDir();
  if (!dir) return null;
  const path = await nodePath();
  const slug = `${kdev.description}-kiln-${await kilnVersion()}`.replace(/[^A-Za-z0-9.]+/g, '-').slice(0, 160);
  return path.join(dir, 'autotune', `${slug}.json`);
}

async function diskCache(kdev: KilnDevice, read: boolean): Promise<DiskCache> {
  const file = await autotuneCacheFile(kdev).catch(() => null);
  if (!file) return NO_DISK;
  const fs = await nodeFs();
  const picks = new Map<string, Pick>();
  if (read) {
    try {
      const saved = JSON.parse(await fs.readFile(file, 'utf8')) as { picks?: Record<string, Pick> };
      for (const [key, pick] of Object.entries(saved.picks ?? {})) picks.set(key, { ...pick, from: 'disk cache' });
      log('autotune', `read ${picks.size} picks from ${file}`);
    } catch {
      // No cache yet (or an unreadable one): every request is measured and the file written anew.
    }
  }
  return {
    picks,
    async save(all) {
      const path = await nodePath();
      await fs.mkdir(path.dirname(file), { recursive: true });
      const measured = Object.fromEntries([...all].map(([key, { from: _from, ...pick }]) => [key, pick]));
      // Written whole to a temporary file, then renamed: a reader never sees half a file.
      const tmp = `${file}.${process.pid}.tmp`;
      await fs.writeFile(tmp, JSON.stringify({ device: kdev.description, kiln: await kilnVersion(), picks: measured }, null, 1));
      await fs.rename(tmp, file);
      log('autotune', `wrote ${all.size} picks to ${file}`);
    },
  };
}

let version: Promise<string> | null = null;

/** kiln's package version (package.json beside the sources or beside dist/). */
function kilnVersion(): Promise<string> {
  version ??= (async () => {
    const fs = await nodeFs();
    for (const up of ['../../package.json', '../../../package.json']) {
      try {
        const pkg = JSON.parse(await fs.readFile(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
        if (pkg.version) return pkg.version;
      } catch {
        // try the next place
      }
    }
    return 'unknown';
  })();
  return version;
}
