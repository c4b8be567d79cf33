// Dawn's known-harmless adapter warnings (issue 17): Dawn's native code writes them to file descriptor 2
// while it finds adapters, where Node cannot hold them back; KILN_LOG=device says what they are, and
// withoutDawnWarnings drops them from a kiln process's captured stderr.

import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { withoutDawnWarnings } from '../runtime/webgpu/device.ts';
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

describe.skipIf(!HAS_LAVAPIPE)('kiln run on lavapipe', () => {
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
