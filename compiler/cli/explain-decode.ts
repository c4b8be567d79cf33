// What `kiln explain` says about generation: each attention site's decode step (the decode_attention the
// KV-cache derivation made of it, passes/kv-cache.ts), where the positions come from, and the kernels
// one decoded token runs; or, when the decode step cannot be derived, why (with the source line).

import { lowerGraph } from '../../codegen/index.ts';
import { KilnError, formatLoc } from '../../ir/errors.ts';
import { type Node, isNode } from '../../ir/graph.ts';
import { formatType } from '../../ir/types.ts';
import type { AutocastDType } from '../../passes/index.ts';
import { compileGenerator } from '../generate.ts';
import type { ForwardModule } from './model.ts';

/** One attention site's decode step, as `kiln explain --json`'s decode.sites reports it. */
export interface DecodeSiteReport {
  readonly layer: number;
  /** decode_attention, or decode_attention_partial when the lowering split it across workgroups. */
  readonly op: string;
  readonly splits: number;
  /** The cache tensors it reads: `k_cache.L` and `v_cache.L`, position-major [S, B, H, D]. */
  readonly cache: string;
  readonly loc: string | null;
  readonly module: string | null;
  readonly source: string | null;
}

export interface DecodeReport {
  /** False when kiln cannot derive a cached decode step; `reason` says why. */
  readonly derived: boolean;
  readonly reason: string | null;
  readonly batch: number;
  /** The position ids' sources (F.arange(0, T)), each rewritten to start + step * pos, the new token's position. */
  readonly positions: readonly string[];
  readonly sites: readonly DecodeSiteReport[];
  /** Kernels (dispatches) one decode step runs for `batch` rows, greedy; the cache copies are not kernels. */
  readonly kernelsPerToken: number | null;
}

const where = (n: Node) => (n.loc ? formatLoc(n.loc) : null);

export async function decodeReport(model: ForwardModule, batch: number, autocast: AutocastDType | undefined): Promise<DecodeReport> {
  try {
    const generator = await compileGenerator(model, { backend: 'cpu', autocast: autocast ?? false });
    const graph = await generator.decodeStage(batch, { greedy: true });
    const { plan, fused } = await generator.plan(batch);
    const sites = graph.nodes
      .filter((n) => n.op === 'decode_attention' || n.op === 'decode_attention_partial')
      .map((n) => {
        const [kCache, vCache] = [n.inputs[1], n.inputs[2]].filter(isNode);
        return {
          layer: Number(String(kCache.attrs.name).split('.')[1]),
          op: n.op,
          splits: typeof n.attrs.splits === 'number' && n.attrs.splits > 0 ? n.attrs.splits : 1,
          cache: `${String(kCache.attrs.name)}, ${String(vCache.attrs.name)} ${formatType(kCache.type)}`,
          loc: where(n),
          module: n.scope ?? null,
          source: n.loc?.text ?? null,
        };
      });
    const positions = plan.positions.map((i) => where(fused.nodes[i]) ?? `%${fused.nodes[i].id}`);
    return { derived: true, reason: null, batch, positions, sites, kernelsPerToken: lowerGraph(graph).kernels.length };
  } catch (e) {
    if (!(e instanceof KilnError)) throw e;
    return { derived: false, reason: e.message, batch, positions: [], sites: [], kernelsPerToken: null };
  }
}

/** `DECODE     transformer.h.0.attn  model.ts:91:13  decode_attention (2 splits) against k_cache.0, v_cache.0 f32[128,1,4,32]`, per site. */
export function formatDecode(r: DecodeReport): string {
  if (!r.derived) return `Decode (kiln generate): NOT CACHED: ${r.reason}`;
  const lines = [`Decode (kiln generate, ${r.batch} row${r.batch === 1 ? '' : 's'}): ${r.sites.length} attention sites read a KV cache; positions from ${r.positions.join(', ') || 'nowhere (no position ids)'} become the new token's position (pos)`];
  for (const s of r.sites) {
    const how = s.op === 'decode_attention' ? 'decode_attention' : `decode_attention in ${s.splits} splits + merge (flash-decoding)`;
    lines.push(`DECODE     ${s.module ?? '(top level)'}  ${s.loc ?? '(no source line)'}  ${how} against ${s.cache}`);
    if (s.source) lines.push(`  ${s.source}`);
  }
  lines.push(`${r.kernelsPerToken} kernels per decoded token (kiln dump --stage decode shows them)`);
  return lines.join('\n');
}
