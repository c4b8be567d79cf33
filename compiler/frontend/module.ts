// Module and Parameter, as torch.nn: submodules and parameters are found by walking a module's own
// fields in order, so `this.wte = new Embedding(...)` registers it under the key `wte`, like __setattr__.

import { type DType, FLOAT_DTYPES, dtypeInfo } from '../../ir/dtypes.ts';
import { KilnError } from '../../ir/errors.ts';
import { type HostTensor, roundOutput } from '../../ir/host.ts';
import { formatType, sameShape } from '../../ir/types.ts';
import { Tensor } from './tensor.ts';

/** A trainable tensor; its host data is the source of truth between compiled calls. */
export class Parameter extends Tensor {
  constructor(host: HostTensor) {
    super(host.type, { host });
    if (dtypeInfo(host.type.dtype).isFloat) this.requiresGrad = true;
  }

  /** Replaces the values (loading a checkpoint, a host optimizer step): a write, so device copies are dropped and uploaded again on use. */
  assign(host: HostTensor): void {
    this.host = host;
  }
}

export class Module {
  training = true;
  private readonly buffers = new Map<string, { persistent: boolean }>();

  /** A named constant tensor that is part of the state (torch's register_buffer), e.g. a causal mask. */
  registerBuffer(name: string, tensor: Tensor, opts: { persistent?: boolean } = {}): void {
    this.buffers.set(name, { persistent: opts.persistent ?? true });
    (this as unknown as Record<string, Tensor>)[name] = tensor;
  }

  /** Direct submodules in field order. */
  *namedChildren(): Generator<[string, Module]> {
    for (const [key, value] of Object.entries(this)) if (value instanceof Module) yield [key, value];
  }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [key, child] of this.namedChildren()) yield* child.namedModules(prefix ? `${prefix}.${key}` : key);
  }

  /** Every parameter once, under its first name (a tied weight appears only under its first owner). */
  namedParameters(): [string, Parameter][] {
    const seen = new Set<Parameter>();
    const out: [string, Parameter][] = [];
    for (const [name, p] of this.allParameterNames()) {
      if (!seen.has(p)) out.push([name, p]);
      seen.add(p);
    }
    return out;
  }

  /** Every parameter under every name it has (tied weights twice). */
  allParameterNames(): [string, Parameter][] {
    const out: [string, Parameter][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [key, value] of Object.entries(m)) {
        if (value instanceof Parameter) out.push([prefix ? `${prefix}.${key}` : key, value]);
      }
    }
    return out;
  }

  /**
   * Every registered buffer as the module holds it now: assigning a tensor to a buffer's attribute
   * (`this.bias = t`) replaces the buffer, as torch's __setattr__ does; assigning a non-tensor drops it.
   */
  namedBuffers(): [string, Tensor, boolean][] {
    const out: [string, Tensor, boolean][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [key, b] of m.buffers) {
        const current = (m as unknown as Record<string, unknown>)[key];
        if (current instanceof Tensor) out.push([prefix ? `${prefix}.${key}` : key, current, b.persistent]);
      }
    }
    return out;
  }

  parameters(): Parameter[] {
    return this.namedParameters().map(([, p]) => p);
  }

  /** Drops every parameter's `.grad` (torch's zero_grad(set_to_none=True)); the next backward() starts from zero. */
  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = undefined;
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /**
   * Converts every float parameter and buffer to `dtype` in place (torch's module.to(dtype)): for pure
   * f16 inference, `model.half()`. Bool and integer buffers (the causal mask) stay as they are. Compiled
   * functions see the new types at their next call and compile again for them.
   */
  to(dtype: DType): this {
    if (!dtypeInfo(dtype).isFloat) throw new KilnError('KILN_E011', `Module.to takes a float dtype (${FLOAT_DTYPES.join(', ')}), got ${dtype}`);
    for (const [name, p] of this.namedParameters()) p.convertInPlace(dtype, name);
    for (const [name, b] of this.namedBuffers()) b.convertInPlace(dtype, name);
    return this;
  }

  /** torch's module.half(): float parameters and buffers to f16. */
  half(): this {
    return this.to('f16');
  }

  /** torch's module.float(): float parameters and buffers to f32. */
  float(): this {
    return this.to('f32');
  }

  /** Parameters (tied ones under their first name) and persistent buffers, by nanoGPT's key names. */
  stateDict(): Map<string, HostTensor> {
    const out = new Map<string, HostTensor>();
    for (const [name, p] of this.namedParameters()) out.set(name, hostOf(p, name));
    for (const [name, b, persistent] of this.namedBuffers()) if (persistent) out.set(name, hostOf(b, name));
    return out;
  }

  /**
   * Loads parameters by key. Every parameter must be present (a tied weight under any of its names),
   * no unknown keys, shapes must match; buffers are optional (they are derived constants). A float
   * tensor loads into a float parameter of another dtype converted to it, as torch's load_state_dict
   * copies into the parameter's dtype (f16 into f32 exactly, f32 into f16 rounded to nearest even; a
   * finite value beyond f16's range is refused, not loaded as inf); other dtypes must match.
   * Checks everything before changing anything: a bad state dict loads nothing.
   */
  loadStateDict(state: ReadonlyMap<string, HostTensor>, source = 'state dict'): void {
    const byName = new Map(this.allParameterNames());
    const bufferNames = new Set(this.namedBuffers().map(([n]) => n));
    const bad = (detail: string) => new KilnError('KILN_E006', `${source}: ${detail}`);
    for (const key of state.keys()) {
      if (!byName.has(key) && !bufferNames.has(key)) throw bad(`unexpected key "${key}" (the model has no such parameter); is the config right?`);
    }
    const updates: [Tensor, HostTensor][] = [];
    const check = (key: string, value: HostTensor, t: Tensor): HostTensor => {
      const floats = dtypeInfo(value.type.dtype).isFloat && dtypeInfo(t.dtype).isFloat;
      if ((value.type.dtype !== t.dtype && !floats) || !sameShape(value.type.shape, t.shape)) {
        throw bad(`key "${key}" is ${formatType(value.type)}, the model expects ${formatType(t.type)}; is the config right?`);
      }
      if (value.type.dtype === t.dtype) return value;
      const data = dtypeInfo(t.dtype).hostArray(value.data.length, 'f32');
      data.set(value.data);
      roundOutput(t.dtype, data, 'f32');
      const i = data.findIndex((x, j) => !Number.isFinite(x) && Number.isFinite(value.data[j]));
      if (i >= 0) throw bad(`key "${key}" holds ${value.data[i]} at flat index ${i}, beyond ${t.dtype}'s range (largest finite ${dtypeInfo(t.dtype).max}), so loaded into the model's ${formatType(t.type)} it would be inf`);
      return { type: { dtype: t.dtype, shape: [...t.shape] }, data };
    };
    for (const [name, p] of this.namedParameters()) {
      const names = [...byName].filter(([, q]) => q === p).map(([n]) => n);
      const key = names.find((n) => state.has(n));
      if (!key) throw bad(`missing key "${name}"${names.length > 1 ? ` (or its tied names ${names.slice(1).join(', ')})` : ''}`);
      updates.push([p, check(key, state.get(key)!, p)]);
    }
    // Buffers are derived constants: a checkpoint may leave them out, but what it has must fit.
    for (const [name, b] of this.namedBuffers()) {
      const value = state.get(name);
      if (value) updates.push([b, check(name, value, b)]);
    }
    for (const [t, value] of updates) {
      t.host = value;
    }
  }
}

function hostOf(t: Tensor, name: string): HostTensor {
  const host = t.readHost();
  if (!host) throw new KilnError('KILN_E011', `${name} has no host copy`);
  return host;
}

/** nn.ModuleList: children keyed "0", "1", ... */
export class ModuleList<T extends Module = Module> extends Module {
  readonly length: number;
  constructor(modules: T[]) {
    super();
    modules.forEach((m, i) => ((this as unknown as Record<string, Module>)[i] = m));
    this.length = modules.length;
  }
  at(i: number): T {
    return (this as unknown as Record<string, T>)[i];
  }
  *[Symbol.iterator](): Iterator<T> {
    for (let i = 0; i < this.length; i++) yield this.at(i);
  }
}

class ModuleDictImpl extends Module {
  constructor(modules: Record<string, Module>) {
    super();
    Object.assign(this, modules);
  }
}

/** nn.ModuleDict: children under the given keys, in order, typed as fields (`transformer.wte`). */
export const ModuleDict = ModuleDictImpl as unknown as new <T extends Record<string, Module>>(modules: T) => Module & T;
export type ModuleDict<T extends Record<string, Module>> = Module & T;
