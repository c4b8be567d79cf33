// The tensor-core matmul's and flash attention's check on the GPU machine (issue 20): test/tensor-core-cases.ts on the device
// kiln opens, one line per case, exit status 1 if any case fails or kiln did not choose tensor cores.
//
//   bash .device/run.sh .device/tensor-core-check.mjs [--json OUT]

import { writeFileSync } from 'node:fs';
import '../../ir/ops/index.ts';
import { getDevice, releaseDevice } from '../../runtime/webgpu/index.ts';
import { ATTENTION_TC_CASES, TENSOR_CORE_CASES, checkAttentionTcCase, checkTensorCoreCase, formatTensorCoreResult } from '../tensor-core-cases.ts';

const kdev = await getDevice();
console.log(`device: ${kdev.description}; subgroup matrices: ${JSON.stringify(kdev.limits.subgroupMatrix ?? 'none')}`);
const results = [];
for (const c of TENSOR_CORE_CASES) {
  const r = await checkTensorCoreCase(kdev, c);
  console.log(formatTensorCoreResult(r));
  results.push(r);
}
for (const c of ATTENTION_TC_CASES) {
  const r = await checkAttentionTcCase(kdev, c);
  console.log(formatTensorCoreResult(r));
  results.push(r);
}
const jsonAt = process.argv.indexOf('--json');
if (jsonAt > 0) writeFileSync(process.argv[jsonAt + 1]!, JSON.stringify({ device: kdev.description, date: new Date().toISOString(), results }, null, 2));
releaseDevice();
process.exitCode = results.every((r) => r.tensorCores && !r.failure) ? 0 : 1;
