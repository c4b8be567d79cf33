// Tensor: the user-facing value. While tracing it stands for an IR node; in eager mode it holds data
// on the host and/or a device. Methods mirror torch.Tensor with TypeScript naming.

import { dtypeInfo } from '../../ir/dtypes.ts';
import { KilnError } from '../../ir/errors.ts';
import type { Node } from '../../ir/graph.ts';
import { type HostData, type HostTensor, roundOutput } from '../../ir/host.ts';
import { type DType, type Shape, type TensorType, formatType, numel } from '../../ir/types.ts';
import { reportToTracer } from './dispatch.ts';
import * as F from './functional.ts';
import type { TapeRecord } from './grad-mode.ts';
import { callerLoc } from './loc.ts';
import { backward } from './tape.ts';

/** A tensor's data on a device, owned by a runtime backend. */
export interface DeviceValue {
  readonly backend: string;
  read(): Promise<HostData>;
}

export interface TensorSource {
  node?: Node;
  host?: HostTensor;
  device?: DeviceValue;
}

export class Tensor {
  #type: TensorType;
  /** Set while tracing: the IR value this tensor stands for. */
  readonly node?: Node;
  // Two copies of one value: whichever is written becomes the truth and the other is dropped.
  #host?: HostTensor;
  #device?: DeviceValue;
  #version = 0;
  /** The op that made this tensor from tensors requiring grad, until backward() frees it (torch's grad_fn). */
  gradFn?: TapeRecord;
  /** The gradient backward() accumulated here (a leaf that requires grad); undefined until then or after zeroGrad(). */
  grad?: Tensor;
  private leafRequiresGrad = false;

  constructor(type: TensorType, source: TensorSource) {
    this.#type = type;
    this.node = source.node;
    this.#host = source.host;
    this.#device = source.device;
  }

  /**
   * How many times this tensor's values were written (torch's `_version`): replacing its data, an
   * in-place update by kiln (an optimizer step, a checkpoint load), or handing its host storage out
   * through `host` or `data()`. Compiled models compare it before each call to notice changed state.
   */
  get type(): TensorType {
    return this.#type;
  }

  /**
   * Converts the values to another float dtype in place (what Module.to and half() do to parameters and
   * buffers, as torch's do to `param.data`): a write. The values must be on the host.
   */
  convertInPlace(dtype: DType, name = 'tensor'): void {
    if (dtype === this.dtype || !dtypeInfo(this.dtype).isFloat) return;
    const host = this.#host;
    if (!host) throw new KilnError('KILN_E011', `${name} has its values only on the GPU; read them back first (await trainStep.sync(), or await tensor.data()) before converting it to ${dtype}`, callerLoc());
    const data = dtypeInfo(dtype).hostArray(host.data.length, 'f32');
    data.set(host.data);
    this.#type = { dtype, shape: [...this.shape] };
    this.host = { type: this.#type, data: roundOutput(dtype, data, 'f32') };
  }

  get version(): number {
    return this.#version;
  }

  /**
   * The host copy, handed out for reading or writing: kiln counts this as a write (the version goes
   * up and a device copy is dropped, to be uploaded again from these values). A write through an array
   * kept from an earlier `host` or `data()` is not seen: fetch it again, or assign `host`.
   */
  get host(): HostTensor | undefined {
    if (this.#host) this.markWritten('host');
    return this.#host;
  }
  /** New values on the host (a write): a device copy is dropped. */
  set host(value: HostTensor | undefined) {
    this.#host = value;
    this.markWritten('host');
  }

  get device(): DeviceValue | undefined {
    return this.#device;
  }

  /** The host copy for reading, without counting a write: kiln's own readers (backends, folding, checkpoints). */
  readHost(): HostTensor | undefined {
    return this.#host;
  }

  /** A copy of the same values, kept beside the other one (an upload, or a read-back): not a write. */
  cacheCopy(copy: { host: HostTensor } | { device: DeviceValue }): void {
    if ('host' in copy) this.#host = copy.host;
    else this.#device = copy.device;
  }

  /** The values were written on one side (`where`): the version goes up and the other copy is stale. */
  markWritten(where: 'host' | 'device'): void {
    this.#version++;
    if (where === 'host') this.#device = undefined;
    else this.#host = undefined;
  }

  get dtype(): DType {
    return this.type.dtype;
  }
  get shape(): Shape {
    return this.type.shape;
  }
  get ndim(): number {
    return this.type.shape.length;
  }
  /** torch's size(): the whole shape, or one dim (negative counts from the end). */
  size(): Shape;
  size(dim: number): number;
  size(dim?: number): Shape | number {
    if (dim === undefined) return this.shape;
    const d = dim < 0 ? dim + this.ndim : dim;
    if (d < 0 || d >= this.ndim) throw new KilnError('KILN_E011', `size(${dim}) is out of range for ${formatType(this.type)}`, callerLoc());
    return this.shape[d];
  }
  numel(): number {
    return numel(this.shape);
  }
  toString(): string {
    return `Tensor(${formatType(this.type)}${this.node ? `, traced %${this.node.id}` : ''})`;
  }

  /**
   * Whether backward() computes a gradient through this tensor: set by the user on a leaf (parameters
   * start with it on), and true for every eager result of an op on such a tensor while grad mode is on.
   */
  get requiresGrad(): boolean {
    return this.leafRequiresGrad || this.gradFn !== undefined;
  }
  set requiresGrad(on: boolean) {
    if (this.gradFn) throw new KilnError('KILN_E011', 'requiresGrad can only be changed on a leaf tensor; use detach() to cut this one from its graph', callerLoc());
    if (on && !dtypeInfo(this.dtype).isFloat) throw new KilnError('KILN_E011', `only float tensors can require grad, this one is ${formatType(this.type)}`, callerLoc());
    this.leafRequiresGrad = on;
  }

  /** The same values, cut from the autograd graph (torch's detach): no tape, no requiresGrad. */
  detach(): Tensor {
    return new Tensor(this.type, { node: this.node, host: this.#host, device: this.#device });
  }

  /**
   * Adds the gradient of this 0-d tensor (or of sum(this * grad)) to `.grad` of every leaf requiring
   * grad that it depends on, then frees the tape (pass `{ retainGraph: true }` to keep it).
   */
  backward(grad?: Tensor, options: { retainGraph?: boolean } = {}): void {
    backward(this, grad, options);
  }

  /** The same storage seen with another shape (reshape, identity dropout). */
  viewAs(type: TensorType): Tensor {
    return new Tensor(type, {
      host: this.#host && { type, data: this.#host.data },
      device: this.#device,
    });
  }

  // ---- reading values: never while tracing ----

  private refuseWhileTraced(what: string): void {
    if (this.node) {
      throw reportToTracer(
        new KilnError(
          'KILN_E003',
          `${what} reads a tensor's value while tracing (data-dependent control flow); compute it with tensor ops, or move it out of forward()`,
          callerLoc(),
        ),
      );
    }
  }

  /** The values, flat and row-major. */
  async data(): Promise<HostData> {
    this.refuseWhileTraced('data()');
    if (this.#host) {
      this.markWritten('host'); // its own array is handed out: a write into it must reach the device copy and compiled models
      return this.#host.data;
    }
    if (this.#device) return this.#device.read();
    throw new Error('tensor has no data');
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    this.refuseWhileTraced('item()');
    if (this.numel() !== 1) throw new KilnError('KILN_E011', `item() needs one element, the tensor is ${formatType(this.type)}`, callerLoc());
    return (await this.data())[0];
  }

  [Symbol.toPrimitive](hint: string): never {
    this.refuseWhileTraced(`using a tensor as a ${hint === 'default' ? 'primitive' : hint}`);
    throw new KilnError('KILN_E011', `a tensor is not a ${hint}; read it with await tensor.item() or tensor.data()`, callerLoc());
  }

  // ---- ops (torch.Tensor methods) ----

  view(...shape: number[]): Tensor {
    return F.reshape(this, shape);
  }
  reshape(...shape: number[]): Tensor {
    return F.reshape(this, shape);
  }
  contiguous(): Tensor {
    return this;
  }
  transpose(dim0: number, dim1: number): Tensor {
    return F.transpose(this, dim0, dim1);
  }
  permute(...dims: number[]): Tensor {
    return F.permute(this, dims);
  }
  slice(dim: number, start?: number, end?: number, step = 1): Tensor {
    return F.slice(this, dim, start, end, step);
  }
  split(splitSize: number, dim = 0): Tensor[] {
    return F.split(this, splitSize, dim);
  }
  to(dtype: DType): Tensor {
    return dtype === this.dtype ? this : F.cast(this, dtype);
  }
  /** torch's half(): this tensor as f16. */
  half(): Tensor {
    return this.to('f16');
  }
  /** torch's float(): this tensor as f32. */
  float(): Tensor {
    return this.to('f32');
  }
  matmul(other: Tensor): Tensor {
    return F.matmul(this, other);
  }
  add(other: Tensor | number): Tensor {
    return F.add(this, other);
  }
  sub(other: Tensor | number): Tensor {
    return F.sub(this, other);
  }
  mul(other: Tensor | number): Tensor {
    return F.mul(this, other);
  }
  div(other: Tensor | number): Tensor {
    return F.div(this, other);
  }
  pow(exponent: Tensor | number): Tensor {
    return F.pow(this, exponent);
  }
  neg(): Tensor {
    return F.neg(this);
  }
  exp(): Tensor {
    return F.exp(this);
  }
  log(): Tensor {
    return F.log(this);
  }
  sqrt(): Tensor {
    return F.sqrt(this);
  }
  tanh(): Tensor {
    return F.tanh(this);
  }
  eq(other: Tensor | number): Tensor {
    return F.eq(this, other);
  }
  ne(other: Tensor | number): Tensor {
    return F.ne(this, other);
  }
  lt(other: Tensor | number): Tensor {
    return F.lt(this, other);
  }
  le(other: Tensor | number): Tensor {
    return F.le(this, other);
  }
  gt(other: Tensor | number): Tensor {
    return F.gt(this, other);
  }
  ge(other: Tensor | number): Tensor {
    return F.ge(this, other);
  }
  logicalNot(): Tensor {
    return F.logicalNot(this);
  }
  maskedFill(mask: Tensor, value: number): Tensor {
    return F.maskedFill(this, mask, value);
  }
  softmax(dim: number): Tensor {
    return F.softmax(this, dim);
  }
  sum(dim?: number | number[], keepdim = false): Tensor {
    return F.sum(this, dim, keepdim);
  }
  mean(dim?: number | number[], keepdim = false): Tensor {
    return F.mean(this, dim, keepdim);
  }
  amax(dim?: number | number[], keepdim = false): Tensor {
    return F.amax(this, dim, keepdim);
  }
  tril(diagonal = 0): Tensor {
    return F.tril(this, diagonal);
  }
  triu(diagonal = 0): Tensor {
    return F.triu(this, diagonal);
  }
}
