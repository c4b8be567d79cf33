// KILN_LOG: structured one-line events on stderr, off unless a channel is named. The kernels channel,
// written when the webgpu backend prepares a program: log.gpu.test.ts.

import { describe, expect, it } from 'vitest';
import { F, Module, type Tensor, compile, tensor } from '../index.ts';
import { log, setLogChannels } from '../ir/log.ts';
import { capturedStderr, softmaxModel } from './log-capture.ts';

const lines = capturedStderr();

describe('KILN_LOG channels', () => {
  it('writes nothing when no channel is on', () => {
    setLogChannels(undefined);
    log('fusion', 'fused %3 softmax');
    expect(lines).toEqual([]);
  });

  it('writes one line per event on an enabled channel, and nothing on the others', () => {
    setLogChannels('fusion,guards');
    log('fusion', 'fused %33 softmax at model.ts:96:15', { rule: 'attention_chain', kernel: 'flash_causal' });
    log('passes', 'canonical/dce: 12 -> 10 nodes');
    log('guards', 'check forward(x: f32[2]) -> hit');
    expect(lines).toEqual([
      '[kiln:fusion] fused %33 softmax at model.ts:96:15 rule=attention_chain kernel=flash_causal',
      '[kiln:guards] check forward(x: f32[2]) -> hit',
    ]);
  });

  it('quotes field values that hold spaces, quotes or "=", and leaves out undefined ones', () => {
    setLogChannels('fusion');
    log('fusion', 'declined %5 softmax', { rule: undefined, reason: 'mask %4 = eq is only known at run time', ms: 1.5, ok: false });
    expect(lines).toEqual(['[kiln:fusion] declined %5 softmax reason="mask %4 = eq is only known at run time" ms=1.5 ok=false']);
  });

  it('turns every channel on with all', () => {
    setLogChannels('all');
    for (const c of ['graph', 'passes', 'fusion', 'guards', 'recompiles', 'kernels'] as const) log(c, 'x');
    expect(lines.map((l) => l.split(']')[0])).toEqual(['[kiln:graph', '[kiln:passes', '[kiln:fusion', '[kiln:guards', '[kiln:recompiles', '[kiln:kernels']);
  });

  it('warns once, listing the valid channels, about a name it does not know', () => {
    setLogChannels('fuson, graph');
    log('graph', 'traced');
    expect(lines).toEqual([
      '[kiln:log] unknown KILN_LOG channel "fuson"; valid: graph, passes, fusion, guards, recompiles, kernels, device, autotune, all',
      '[kiln:graph] traced',
    ]);
  });
});

describe('compile() logs what it decides', () => {
  it('logs the guard check, the traced graph and each pass, then a hit, then which argument changed on a retrace', async () => {
    setLogChannels('guards,graph,passes,recompiles');
    const compiled = compile(softmaxModel(), { backend: 'cpu' });
    await compiled(tensor([1, 2, 3, 4], [2, 2]));
    await compiled(tensor([5, 6, 7, 8], [2, 2]));
    await compiled(tensor([1, 2, 3], [1, 3]));
    const [guard, graph] = lines;
    expect(guard).toBe('[kiln:guards] check forward(x: f32[2,2]) -> miss cached=0');
    expect(graph).toBe('[kiln:graph] traced forward(x: f32[2,2]): 4 nodes outputs=1');
    const passLines = lines.filter((l) => l.startsWith('[kiln:passes]'));
    expect(passLines.length).toBeGreaterThan(0);
    for (const l of passLines) expect(l).toMatch(/^\[kiln:passes\] (canonical|fused|lowered)\/\w+: \d+ -> \d+ nodes ms=\d+\.\d\d$/);
    expect(lines).toContain('[kiln:guards] check forward(x: f32[2,2]) -> hit cached=1');
    expect(lines).toContain('[kiln:recompiles] retracing forward(): x: f32[2,2] -> f32[1,3] traces=2');
  });

  it('names the buffer whose new values forced a retrace, and the state that changed layout', async () => {
    setLogChannels('recompiles');
    const model = Object.assign(new Module(), { forward: (x: Tensor) => x.mul(model.scale) }) as Module & { scale: Tensor; forward: (x: Tensor) => Tensor };
    model.registerBuffer('scale', tensor([2, 3], [2]));
    const compiled = compile(model, { backend: 'cpu' });
    await compiled(tensor([1, 1], [2]));
    model.scale.host!.data[1] = 4;
    await compiled(tensor([1, 1], [2]));
    model.registerBuffer('scale', tensor([1, 2, 3], [3]));
    await compiled(tensor([1, 1, 1], [3]));
    expect(lines).toEqual([
      '[kiln:recompiles] retracing forward(): buffer scale was written (version 0 -> 1) with new values; the compiled graph folded its old values in (constant folding, causal proof) traces=2',
      '[kiln:recompiles] retracing forward(): x: f32[2] -> f32[3]; scale: f32[2] -> f32[3] traces=3',
    ]);
  });

  it('logs each fusion decision with its site, rule and reason', async () => {
    setLogChannels('fusion');
    const attention = Object.assign(new Module(), {
      forward: (q: Tensor, k: Tensor, v: Tensor) => F.softmax(q.matmul(k.transpose(-2, -1)).mul(0.5), -1).matmul(v),
    });
    const x = tensor(Array.from({ length: 8 }, (_, i) => i / 8), [1, 2, 4]);
    await compile(attention, { backend: 'cpu' })(x, x, x);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\[kiln:fusion\] fused %\d+ softmax at test\/log\.test\.ts:\d+:\d+ pass=fuse_attention rule=attention_chain kernel=flash reason="no mask: every key attended"$/);
  });

});
