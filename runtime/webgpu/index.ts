// kiln's WebGPU runtime, one path for Node (Dawn, the `webgpu` package) and browsers.
//
//   const kdev = await getDevice();                      // adapter limits requested; errors watched
//   const program = lowerGraph(graph);                   // codegen/
//   const exec = await Executor.create(kdev, program);   // pipelines compiled (E010 here), buffers allocated (E009)
//   const outs = exec.run(new Map([[x, hostTensor], [w, upload(kdev, weights)]]));   // one submit
//   const data = await readback(kdev, outs.get('y')!, node.type);                    // throws pending GPU errors
//   runKernel(kdev, lowerNode(node)!, [bufA, bufB]);     // eager: one op on buffers you hold, submitted at once
//   await releaseDevice();                               // tests: let the Node process exit

export { type KilnDevice, getDevice, getGpu, releaseDevice } from './device.ts';
export { ErrorWatch, type ErrorContext } from './errors.ts';
export { Executor, type Feed } from './executor.ts';
export { allocateFor, gpuBytes, readback, toGpuWords, upload, writeTensor } from './buffers.ts';
export { type GpuPipeline, pipelineFor, pipelineForSync } from './pipelines.ts';
export { runKernel } from './eager.ts';
