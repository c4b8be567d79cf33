#!/usr/bin/env bash
# Packs the benchmark for the GPU machine: `npm run bench:pack` (or bash test/bench/pack.sh from anywhere).
# The shared pack.sh ships node, Dawn and .device/bench.mjs (everything but `webgpu` bundled in); this
# adds what onnxruntime-web loads at run time, into .device/node_modules/onnxruntime-web/dist/, where
# the ort peer looks (the node_modules folder above its bundle):
#   ort-wasm-simd-threaded.asyncify.mjs   the glue that ort.webgpu.mjs imports
#   ort-wasm-simd-threaded.asyncify.wasm  brotli-compressed as .wasm.br (27 MiB -> 5 MiB, to stay under the
#                                          64 MiB carry limit); the peer decompresses it in memory
#   torch_cases.py                         PyTorch on kiln's cases that the shared torch_anchor.py lacks (f16 too)
# Then on the device: bash .device/run.sh .device/bench.mjs --suite all --json $OUT/bench.json
# or train: bash .device/run.sh .device/train.mjs --data examples/nanogpt/data/tinyshakespeare.txt --out_dir $OUT/run
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
shared=${KILN_SHARED:-$root/../shared}
cd "$root"
bash "$shared/device/pack.sh" test/bench/bench.ts examples/nanogpt/train.ts test/bench/train-profile.ts test/bench/tensor-core-probe.ts test/bench/tensor-core-check.ts test/bench/epilogue-tc-check.ts
cp test/bench/torch_cases.py .device/   # beside torch_anchor.py and nanogpt_model.py, which it imports

src=node_modules/onnxruntime-web/dist
dist=.device/node_modules/onnxruntime-web/dist
rm -rf .device/node_modules/onnxruntime-web
mkdir -p "$dist"
cp "$src/ort-wasm-simd-threaded.asyncify.mjs" "$dist/"
node -e '
  const { readFileSync, writeFileSync } = require("node:fs");
  const { brotliCompressSync, constants } = require("node:zlib");
  const [from, to] = process.argv.slice(1);
  writeFileSync(to, brotliCompressSync(readFileSync(from), { params: { [constants.BROTLI_PARAM_QUALITY]: 9 } }));
' "$src/ort-wasm-simd-threaded.asyncify.wasm" "$dist/ort-wasm-simd-threaded.asyncify.wasm.br"

limit=$((64 * 1024 * 1024))
size=$(du -sb .device | cut -f1)
echo ".device: $((size / 1024 / 1024)) MiB ($size bytes) of the 64 MiB carry limit"
[ "$size" -le "$limit" ] || { echo "error: .device is over the carry limit" >&2; exit 1; }
