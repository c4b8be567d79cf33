// kiln's public API: the torch-like front end, compile(), the IR tools, checkpoints.

import './ir/ops/index.ts';
import './compiler/eager.ts';

export { Tensor } from './compiler/frontend/tensor.ts';
export * as F from './compiler/frontend/functional.ts';
export * as nn from './compiler/frontend/nn.ts';
export { Module, ModuleDict, ModuleList, Parameter } from './compiler/frontend/module.ts';
export { manualSeed, random, randn } from './compiler/frontend/random.ts';
export { tensor, fromHost } from './compiler/frontend/create.ts';
export { compile, type CompileOptions, type CompiledModel, type Compilation } from './compiler/compile.ts';
export { useBackend } from './compiler/eager.ts';
export { traceModule } from './compiler/tracer.ts';
export { KilnError, ERROR_CODES, type SourceLoc } from './ir/errors.ts';
export { Graph, type Node } from './ir/graph.ts';
export { printGraph, parseGraph } from './ir/text.ts';
export { verifyGraph } from './ir/verify.ts';
export type { DType, TensorType } from './ir/types.ts';
export type { HostTensor } from './ir/host.ts';
export { interpret } from './runtime/interpreter.ts';
export { differentiate } from './ir/autograd.ts';
export { gradients, gradsOf, lossAndGradients } from './compiler/autograd.ts';
export { isGradEnabled, noGrad } from './compiler/frontend/grad-mode.ts';
export { autocast, autocastState } from './compiler/frontend/autocast.ts';
export { autocastGraph, type AutocastDType } from './passes/autocast.ts';
export { AdamW, GradScaler, OPTIM_STEP_KEY, clipGradNorm, learningRate, type AdamWOptions, type GradScalerOptions, type LearningRateSchedule, type ParamGroup } from './compiler/optim.ts';
export { compileTrainStep, type StepResult, type TrainStep, type TrainStepOptions, type TrainingCompilation } from './compiler/train-step.ts';
export { compileGenerator, type GenerateOptions, type GenerateResult, type GeneratedStep, type Generator, type GeneratorOptions } from './compiler/generate.ts';
