// Types for what the peers import without types of its own.

// onnxruntime-web's WebGPU build, imported by path (the package's exports give Node the CPU-only build):
// the package's API.
declare module '*/onnxruntime-web/dist/ort.webgpu.mjs' {
  export * from 'onnxruntime-web';
}

// core-js's iterator helpers (Iterator.prototype.map, ...), a polyfill imported for its effect.
declare module 'core-js/actual/iterator/index.js';
