// Bind group layouts come from the generated shader itself: wgsl_reflect parses the module (a parse
// failure is a codegen bug, reported against the node) and lists its bindings.

// The package's "main" is a CommonJS build Node's ESM loader rejects; its ES module build is the same code.
import { ResourceType, WgslReflect } from 'wgsl_reflect/wgsl_reflect.module.js';
import { KilnError } from '../ir/errors.ts';
import type { Node } from '../ir/graph.ts';
import { INDEX_ERRORS } from './index-errors.ts';
import { describeNode } from './module.ts';

export interface ReflectedBinding {
  readonly binding: number;
  readonly name: string;
  /** uniform params, a read-only storage input, the read_write output, or the index-error record (codegen/index-errors.ts). */
  readonly kind: 'uniform' | 'read' | 'read_write' | 'index_errors';
}

/**
 * The module as wgsl_reflect can parse it: it knows no subgroup-matrix types (three template
 * parameters) nor subgroupMatrixLoad's template argument, so those are stood in for by a vec4 and a
 * plain call. Only the text reflected changes; bindings are module-scope declarations, which keep their types.
 */
function reflectable(code: string): string {
  if (!code.includes('subgroup_matrix')) return code;
  return code.replace(/subgroupMatrixLoad<subgroup_matrix_\w+<[^>]*>>/g, 'subgroupMatrixLoad').replace(/subgroup_matrix_(left|right|result)<[^>]*>/g, 'vec4<f32>');
}

export function reflectBindings(code: string, node: Node): ReflectedBinding[] {
  let reflect: WgslReflect;
  try {
    reflect = new WgslReflect(reflectable(code));
  } catch (e) {
    throw new KilnError('KILN_E010', `generated WGSL for ${describeNode(node)} does not parse: ${(e as Error).message}`, node.loc);
  }
  if (reflect.entry.compute.length !== 1) {
    throw new KilnError('KILN_E010', `generated WGSL for ${describeNode(node)} has ${reflect.entry.compute.length} compute entry points, expected 1`, node.loc);
  }
  const group = reflect.getBindGroups()[0] ?? [];
  return group.filter(Boolean).map((v) => {
    if (v.resourceType === ResourceType.Uniform) return { binding: v.binding, name: v.name, kind: 'uniform' };
    if (v.resourceType !== ResourceType.Storage) {
      throw new KilnError('KILN_E010', `generated WGSL for ${describeNode(node)} binds ${v.name}, which is neither a buffer nor a uniform`, node.loc);
    }
    if (v.name === INDEX_ERRORS) return { binding: v.binding, name: v.name, kind: 'index_errors' };
    return { binding: v.binding, name: v.name, kind: v.access === 'read_write' ? 'read_write' : 'read' };
  });
}
