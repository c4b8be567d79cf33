// ONNX model bytes for the onnxruntime-web peer, written by hand: onnxruntime-web takes a model as
// bytes, and the few protobuf messages a one-node model needs (ModelProto, GraphProto, NodeProto,
// AttributeProto, ValueInfoProto and its TypeProto) fit in a tiny encoder, where the `onnx-proto`
// package would bring protobufjs and generated code for the whole schema. Field numbers are those of
// onnx/onnx.proto (IR version 8).

/** Protobuf wire types: varint (ints, enums), 32-bit (float), length-delimited (strings, messages). */
const VARINT = 0;
const LENGTH_DELIMITED = 2;
const FIXED32 = 5;

type Field = number[];

function varint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(n)); // negative ints are ten bytes of two's complement
  do {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v ? byte | 0x80 : byte);
  } while (v);
  return out;
}

const key = (field: number, wire: number) => varint((field << 3) | wire);
const intField = (field: number, n: number): Field => [...key(field, VARINT), ...varint(n)];
const bytesField = (field: number, bytes: number[]): Field => [...key(field, LENGTH_DELIMITED), ...varint(bytes.length), ...bytes];
const stringField = (field: number, s: string): Field => bytesField(field, [...new TextEncoder().encode(s)]);
const message = (field: number, ...fields: Field[]): Field => bytesField(field, fields.flat());

function floatField(field: number, x: number): Field {
  const bytes = new Uint8Array(new Float32Array([x]).buffer);
  return [...key(field, FIXED32), ...bytes];
}

/** An attribute of a node: ints and floats are all the peer needs (AttributeProto.type INT = 2, FLOAT = 1). */
export type OnnxAttribute = { name: string; int: number } | { name: string; float: number };

export interface OnnxNode {
  readonly opType: string;
  readonly domain?: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attributes?: readonly OnnxAttribute[];
}

/** A graph input or output: a float32 tensor of fixed shape (TensorProto.DataType FLOAT = 1). */
export interface OnnxValue {
  readonly name: string;
  readonly shape: readonly number[];
}

export interface OnnxGraph {
  readonly nodes: readonly OnnxNode[];
  readonly inputs: readonly OnnxValue[];
  readonly outputs: readonly OnnxValue[];
  /** Operator sets by domain ('' is ONNX's own), e.g. { '': 17, 'com.microsoft': 1 }. */
  readonly opsets: Readonly<Record<string, number>>;
}

function attribute(a: OnnxAttribute): Field {
  // AttributeProto: name = 1, f = 2, i = 3, type = 20
  return 'int' in a
    ? message(5, stringField(1, a.name), intField(3, a.int), intField(20, 2))
    : message(5, stringField(1, a.name), floatField(2, a.float), intField(20, 1));
}

function node(n: OnnxNode, index: number): Field {
  // NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5, domain = 7
  return message(
    1,
    ...n.inputs.map((x) => stringField(1, x)),
    ...n.outputs.map((x) => stringField(2, x)),
    stringField(3, `${n.opType}_${index}`),
    stringField(4, n.opType),
    ...(n.attributes ?? []).map(attribute),
    ...(n.domain ? [stringField(7, n.domain)] : []),
  );
}

function valueInfo(field: number, v: OnnxValue): Field {
  // ValueInfoProto { name = 1, type = 2 }, TypeProto { tensor_type = 1 }, TypeProto.Tensor { elem_type = 1, shape = 2 },
  // TensorShapeProto { dim = 1 }, Dimension { dim_value = 1 }
  const shape = message(2, ...v.shape.map((d) => message(1, intField(1, d))));
  return message(field, stringField(1, v.name), message(2, message(1, intField(1, 1), shape)));
}

/** The serialized ModelProto of a one-graph model, ready for `InferenceSession.create(bytes)`. */
export function encodeModel(graph: OnnxGraph): Uint8Array {
  // GraphProto: node = 1, name = 2, input = 11, output = 12
  const graphProto = message(
    7,
    ...graph.nodes.map(node),
    stringField(2, 'kiln_bench'),
    ...graph.inputs.map((v) => valueInfo(11, v)),
    ...graph.outputs.map((v) => valueInfo(12, v)),
  );
  // ModelProto: ir_version = 1, producer_name = 2, graph = 7, opset_import = 8 (OperatorSetIdProto { domain = 1, version = 2 })
  const opsets = Object.entries(graph.opsets).map(([domain, version]) => message(8, stringField(1, domain), intField(2, version)));
  return new Uint8Array([...intField(1, 8), ...stringField(2, 'kiln bench'), ...graphProto, ...opsets.flat()]);
}
