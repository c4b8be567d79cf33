// The progress of npm run train and npm run sample (compiler/cli/progress.ts): train's plain log lines
// end with the time left; sample draws a progress line over the tokens it generates, in place on a
// terminal, nothing elsewhere for a run this short. A 1-layer GPT on the CPU, 4 iterations: about 2 s.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main as sample } from '../examples/nanogpt/sample.ts';
import { main as train } from '../examples/nanogpt/train.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-progress-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const tiny = ['--device', 'cpu', '--n_layer', '1', '--n_head', '2', '--n_embd', '16', '--block_size', '16', '--batch_size', '2', '--dropout', '0'];
const stream = (isTTY: boolean) => ({ isTTY, text: '', write(t: string) { this.text += t; } });

describe('progress of the nanoGPT scripts', () => {
  it("train's plain log lines (not a terminal) end with the time left, 0s at the last iteration", async () => {
    const lines: string[] = [];
    await train([...tiny, '--out_dir', dir, '--max_iters', '4', '--eval_interval', '4', '--eval_iters', '1', '--log_interval', '1'], (t) => void lines.push(t));
    const iters = lines.filter((l) => l.startsWith('iter '));
    expect(iters).toHaveLength(4);
    for (const line of iters) expect(line).toMatch(/^iter \d: loss \d\.\d{4}, lr [\d.e+-]+, time \d+ms, eta (\d+s|\d+m \d\ds)\n$/);
    expect(iters[3]).toMatch(/^iter 3: .*, eta 0s\n$/); // 4 of 4 done
    expect(lines.join('')).not.toContain('\r'); // plain lines: no bar redrawn in place
  });

  it('sample shows the tokens generated of num_samples * max_new_tokens in place on a terminal, and clears it before each sample', async () => {
    const tty = stream(true);
    const out: string[] = [];
    const samples = await sample(['--out_dir', dir, '--num_samples', '2', '--max_new_tokens', '5', '--device', 'cpu'], (t) => void out.push(t), tty);
    expect(samples).toHaveLength(2);
    const updates = tty.text.split('\r').filter((s) => s.startsWith('sampling '));
    // before sample 1 and after each of its five tokens, then sample 2 from 5 on
    expect(updates.map((u) => Number(/\] (\d+)\/10 /.exec(u)![1]))).toEqual([0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10]);
    expect(updates[0]).toBe('sampling [........................] 0/10  ? token/s  eta ?\x1b[K');
    expect(updates[11]).toMatch(/^sampling \[#{24}\] 10\/10  [\d.]+ (token\/s|s\/token)  eta 0s\x1b\[K$/);
    expect(tty.text).toMatch(/\r {20,}\r$/); // cleared: the sample's text follows on a clean line

    const pipe = stream(false);
    await sample(['--out_dir', dir, '--num_samples', '1', '--max_new_tokens', '5', '--device', 'cpu'], () => undefined, pipe);
    expect(pipe.text).toBe(''); // a plain line only every 10 s
  });
});
