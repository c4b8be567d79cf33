// Dawn's known-harmless adapter warnings (issue 17): Dawn's native code writes them to file descriptor 2
// while it finds adapters, where Node cannot hold them back in-process. The `kiln` launcher runs the
// command as a child whose stderr passes through bin/dawn-filter.mjs; KILN_LOG=device keeps them and says
// what they are, and withoutDawnWarnings drops them from a kiln process's captured stderr.

import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import { filterStream, withoutDawnWarnings } from '../bin/dawn-filter.mjs';
import { HAS_LAVAPIPE, LAVAPIPE_ICD } from './lavapipe.ts';

const KILN = new URL('../bin/kiln.mjs', import.meta.url).pathname;
const TINY = '{"n_layer":1,"n_head":2,"n_embd":16,"block_size":16,"vocab_size":65}';

describe('withoutDawnWarnings', () => {
  it("drops Dawn's limit, adapter and no-driver warnings, and keeps everything else", () => {
    const stderr = [
      'Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.',
      'Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.',
      'Warning: Vulkan shaderUniform*ArrayDynamicIndexing required',
      'Warning: Vulkan fragmentStoresAndAtomics feature required.',
      'Warning: vkCreateInstance: Found no drivers!',
      'Warning: vkCreateInstance failed with VK_ERROR_INCOMPATIBLE_DRIVER',
      '    at CheckVkSuccessImpl (/home/runner/work/node-webgpu/node-webgpu/third_party/dawn/src/dawn/native/vulkan/VulkanError.cpp:106)',
      '',
      'note: no --config: using a small nanoGPT',
      'Warning: something else',
      '',
    ].join('\n');
    expect(withoutDawnWarnings(stderr)).toBe('note: no --config: using a small nanoGPT\nWarning: something else\n');
    expect(withoutDawnWarnings('')).toBe('');
  });
});

describe("the kiln launcher's stderr filter (bin/dawn-filter.mjs)", () => {
  it('drops whole harmless lines however the chunks split them, and passes a progress line at once', async () => {
    const [input, output] = [new PassThrough(), new PassThrough()];
    let text = '';
    output.on('data', (d) => (text += d));
    filterStream(input, output);
    input.write('Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dyn');
    input.write('amic offset allocation limit.\nnote: kept\n\rrun 1/3');
    await new Promise((r) => setImmediate(r));
    expect(text).toBe('note: kept\n\rrun 1/3'); // the \r line is written before its newline comes
    input.end('\nWarning: something else\n');
    await new Promise((r) => setImmediate(r));
    expect(text).toBe('note: kept\n\rrun 1/3\nWarning: something else\n');
  });
});

describe.skipIf(!HAS_LAVAPIPE)('kiln run on lavapipe', () => {
  it("prints none of Dawn's harmless warnings by default (its stderr as a user sees it), and exits with the command's status", async () => {
    const env = { ...process.env, VK_ICD_FILENAMES: LAVAPIPE_ICD, KILN_LOG: '' };
    const run = (args: string[]) =>
      new Promise<{ code: number; stderr: string }>((resolve) =>
        execFile('node', [KILN, 'run', 'examples/nanogpt/model.ts', ...args], { env, timeout: 120_000 }, (e, _out, err) => resolve({ code: e ? Number(e.code) : 0, stderr: err })),
      );
    const ok = await run(['--config', TINY, '--batch', '1', '--seq', '8', '--iters', '1', '--device', 'webgpu']);
    expect(ok.code).toBe(0);
    expect(ok.stderr).toBe('');
    const bad = await run(['--config', TINY, '--batch', '0']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^KILN_E015 /);
  });


  it('KILN_LOG=device names the adapter and says the Dawn warnings before it are harmless', async () => {
    const env = { ...process.env, VK_ICD_FILENAMES: LAVAPIPE_ICD, KILN_LOG: 'device' };
    const stderr = await new Promise<string>((resolve, reject) =>
      execFile('node', [KILN, 'run', 'examples/nanogpt/model.ts', '--config', TINY, '--batch', '1', '--seq', '8', '--iters', '1'], { env, timeout: 120_000 }, (e, _out, err) => (e ? reject(e) : resolve(err))),
    );
    const kiln = withoutDawnWarnings(stderr).trimEnd().split('\n');
    expect(kiln).toHaveLength(1);
    expect(kiln[0]).toMatch(/^\[kiln:device\] opened .*llvmpipe.* f16=true .*dawn="Dawn's own 'Warning: \.\.\.' lines on stderr at start/);
  });
});
