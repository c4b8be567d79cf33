// The WebGPU device: found the same way in browsers (navigator.gpu) and Node (the `webgpu` package,
// Dawn), opened once with the adapter's real limits, and watched so that no GPU error passes silently.

import { KilnError } from '../../ir/errors.ts';
import type { KernelLimits, SubgroupMatrixShape } from '../../ir/limits.ts';
import { log } from '../../ir/log.ts';
import { dawn } from '../node-only.ts';
import { ErrorWatch } from './errors.ts';

// SwiftShader's Vulkan driver, shipped with Chromium: the fallback when no hardware adapter exists.
const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

// Limits kiln needs above WebGPU's defaults (8 storage buffers, 128 MiB bindings, 16 KiB workgroup memory).
const WANTED_LIMITS = [
  'maxStorageBuffersPerShaderStage',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxUniformBufferBindingSize',
] as const;

export interface KilnDevice {
  readonly device: GPUDevice;
  /** The device's limits, and subgroupMinSize when it has the `subgroups` feature (what lowerings read, see ir/limits.ts). */
  readonly limits: GPUSupportedLimits & KernelLimits;
  /** The adapter in words, for messages and benchmarks. */
  readonly description: string;
  readonly errors: ErrorWatch;
  /** Whether the device was opened with `shader-f16`: kernels with f16 storage need it (runtime/webgpu/pipelines.ts says so when missing). */
  readonly f16: boolean;
}

// Dawn's native code prints a few harmless adapter warnings straight to fd 2 while it enumerates Vulkan
// adapters, where Node cannot hold them back: the `kiln` launcher filters them (bin/dawn-filter.mjs, which
// lists them), and KILN_LOG=device says they are harmless.

type CreateGpu = (options: string[]) => GPU;
// Dawn rounds timestamps (to ~33 µs) against timing attacks; kiln profile wants them exact. Browsers keep theirs.
// On NVIDIA's Vulkan driver Dawn offers shader-f16 only with vulkan_enable_f16_on_nvidia (Chrome enables it
// the same way), and subgroup matrices (tensor cores) only with allow_unsafe_apis, as Chrome behind its flag.
const DAWN_OPTIONS = ['disable-dawn-features=timestamp_quantization', 'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia'];
let nodeCreate: CreateGpu | null = null;
// Every Dawn instance made stays referenced until exit: Dawn can crash at exit on lavapipe when one was collected.
const instances: GPU[] = [];
let gpu: GPU | null = null;
let current: Promise<KilnDevice> | null = null;
/** The device `current` resolved to: a lost device is replaced only while it is still this one. */
let currentDevice: GPUDevice | null = null;

function isNode(): boolean {
  return typeof process !== 'undefined' && typeof process.versions?.node === 'string';
}

/** navigator.gpu in browsers; in Node, Dawn from the `webgpu` package with its globals installed. */
export async function getGpu(): Promise<GPU> {
  if (gpu) return gpu;
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return (gpu = nav.gpu);
  if (!isNode()) throw new KilnError('KILN_E007', 'this browser has no WebGPU (navigator.gpu is missing); use a browser with WebGPU enabled');
  // Dawn warns when XDG_RUNTIME_DIR is unset; it must be set before the first create().
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  const webgpu = await dawn();
  Object.assign(globalThis, webgpu.globals);
  nodeCreate = webgpu.create;
  return (gpu = newInstance());
}

function newInstance(): GPU {
  const instance = nodeCreate!(DAWN_OPTIONS);
  instances.push(instance);
  return instance;
}

async function findAdapter(): Promise<GPUAdapter> {
  let adapter = await (await getGpu()).requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter && nodeCreate && !process.env.VK_ICD_FILENAMES) {
    // No hardware Vulkan: Dawn reads VK_ICD_FILENAMES when an instance is created, so a new one sees SwiftShader.
    process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
    gpu = newInstance();
    adapter = await gpu.requestAdapter();
  }
  if (!adapter) {
    const hint = isNode() ? `; for a software GPU: apt-get install chromium libvulkan1 (provides ${SWIFTSHADER_ICD})` : '';
    throw new KilnError('KILN_E007', `no WebGPU adapter found${hint}`);
  }
  return adapter;
}

async function openDevice(): Promise<KilnDevice> {
  const adapter = await findAdapter();
  const requiredLimits: Record<string, number> = {};
  for (const name of WANTED_LIMITS) requiredLimits[name] = adapter.limits[name];
  // Timestamps let `kiln profile` time each kernel on the GPU; without them it falls back to the wall clock.
  const requiredFeatures: GPUFeatureName[] = adapter.features.has('timestamp-query') ? ['timestamp-query'] : [];
  // Subgroup operations, for lowerings that ask for them (KernelLimits.subgroupMinSize says they may).
  const subgroups = adapter.features.has('subgroups' as GPUFeatureName) && (adapter.info?.subgroupMinSize ?? 0) >= 4;
  if (subgroups) requiredFeatures.push('subgroups' as GPUFeatureName);
  // f16 storage and arithmetic, for f16 tensors (autocast, model.half()); without it they fail with KILN_E021.
  const f16 = adapter.features.has('shader-f16');
  if (f16) requiredFeatures.push('shader-f16');
  // Tensor cores (codegen/wgsl/matmul_tc.ts): f16 x f16 -> f32 subgroup matrices, offered by Dawn under
  // allow_unsafe_apis (on NVIDIA's Vulkan driver); KILN_TENSOR_CORES=0 leaves them off (the SIMT kernels then).
  const matrixShapes = f16 && subgroups && !(isNode() && process.env.KILN_TENSOR_CORES === '0') ? subgroupMatrixShapes(adapter) : [];
  if (matrixShapes.length) requiredFeatures.push(SUBGROUP_MATRIX_FEATURE as GPUFeatureName);
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures, label: 'kiln' });
  const info = adapter.info;
  const description = [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ') || 'WebGPU adapter';
  const errors = new ErrorWatch(device);
  currentDevice = device;
  void device.lost.then((lost) => {
    // Lost for any reason (a driver reset, destroy() by other code): the next getDevice() opens a fresh one.
    if (device === currentDevice) [current, currentDevice] = [null, null];
    errors.fatal(new KilnError('KILN_E008', `the WebGPU device was lost (${lost.reason}): ${lost.message}; the next call opens a new device (compiled models move to it and upload their weights again)`));
  });
  log('device', `opened ${description}`, {
    f16,
    subgroups,
    timestamps: requiredFeatures.includes('timestamp-query'),
    tensorCores: matrixShapes.map((c) => `${c.m}x${c.n}x${c.k}`).join(' ') || undefined,
    maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
    dawn: isNode() ? "Dawn's own 'Warning: ...' lines on stderr at start (maxDynamic*BuffersPerPipelineLayout artificially reduced, Vulkan * required, Found no drivers) come from its native adapter discovery and are harmless here" : undefined,
  });
  const limits = { ...deviceLimits(device.limits, subgroups ? adapter.info.subgroupMinSize : undefined), ...(subgroups ? { subgroupMaxSize: adapter.info.subgroupMaxSize } : {}), ...(matrixShapes.length ? { subgroupMatrix: matrixShapes } : {}) };
  return { device, limits, description, errors, f16 };
}

const SUBGROUP_MATRIX_FEATURE = 'chromium-experimental-subgroup-matrix';

/** The adapter's f16 x f16 -> f32 subgroup-matrix shapes (Dawn's GPUAdapterInfo.subgroupMatrixConfigs), none without the feature. */
function subgroupMatrixShapes(adapter: GPUAdapter): SubgroupMatrixShape[] {
  if (!adapter.features.has(SUBGROUP_MATRIX_FEATURE)) return [];
  const configs = (adapter.info as unknown as { subgroupMatrixConfigs?: readonly Record<string, unknown>[] }).subgroupMatrixConfigs ?? [];
  return configs
    .filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32')
    .map((c) => ({ m: Number(c.M), n: Number(c.N), k: Number(c.K) }));
}

/** The device's limits as a plain object (GPUSupportedLimits keeps them as getters), with the subgroup size added. */
function deviceLimits(limits: GPUSupportedLimits, subgroupMinSize: number | undefined): GPUSupportedLimits & KernelLimits {
  const copy: Record<string, unknown> = {};
  for (const name in limits) copy[name] = limits[name as keyof GPUSupportedLimits];
  return { ...(copy as unknown as GPUSupportedLimits), ...(subgroupMinSize ? { subgroupMinSize } : {}) };
}

/** The one device kiln uses; opened on first call. */
export function getDevice(): Promise<KilnDevice> {
  if (!current) {
    current = openDevice();
    current.catch(() => (current = null));
  }
  return current;
}

/**
 * Destroys the device and drops Dawn's instance so a Node process has nothing left holding it open.
 * Tests call this in afterAll; a later getDevice() opens a new device.
 */
export async function releaseDevice(): Promise<void> {
  const open = current;
  [current, currentDevice] = [null, null];
  if (open) {
    const kdev = await open.catch(() => null);
    if (kdev?.device === currentDevice) currentDevice = null; // it was still opening when released
    kdev?.errors.closing();
    kdev?.device.destroy();
  }
  if (nodeCreate) gpu = null;
}
