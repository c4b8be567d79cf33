// A small GPT whose attention blocks look like nanoGPT's, and all but the first miss kiln's attention
// fusion in one way each. `kiln explain examples/near-miss/model.ts` says why, at these lines:
//   h.0  SelfAttention, nanoGPT's manual attention: fused, with the causal kernel (the control)
//   h.1  ReturnsWeights: the weights are also returned, so the softmax is used outside the chain -> not fused
//   h.2  FlippedMask: a causal mask with one element flipped -> fused, with the masked kernel, not the causal one
//   h.3  SoftmaxOverQueries: softmax over dim -2 (the queries), not the keys -> not fused
//   h.4  FiniteFill: masked_fill with -1e4 instead of -inf, as some GPT-2 ports do -> not fused

import { F, Module, ModuleDict, ModuleList, type Tensor, nn, tensor } from '../../index.ts';

export interface NearMissConfig {
  block_size: number;
  vocab_size: number;
  n_embd: number;
  n_head: number;
}

export const defaultConfig: NearMissConfig = { block_size: 16, vocab_size: 96, n_embd: 32, n_head: 2 };

/** nanoGPT's manual causal attention, in parts the near misses below reuse: scores, mask, merge. */
class SelfAttention extends Module {
  c_attn: nn.Linear;
  c_proj: nn.Linear;
  n_head: number;
  declare bias: Tensor;

  constructor(config: NearMissConfig) {
    super();
    this.c_attn = new nn.Linear(config.n_embd, 3 * config.n_embd);
    this.c_proj = new nn.Linear(config.n_embd, config.n_embd);
    this.n_head = config.n_head;
    this.registerBuffer('bias', this.causalMask(config.block_size));
  }

  /** nanoGPT's mask: 1 where query i may see key j (j <= i), shape (1, 1, n, n). */
  causalMask(n: number): Tensor {
    return F.tril(F.ones([n, n])).view(1, 1, n, n);
  }

  /** (B, T, C) -> q, k, v of (B, nh, T, hs), and the scaled scores q @ k^T / sqrt(hs) of (B, nh, T, T). */
  scores(x: Tensor): { q: Tensor; k: Tensor; v: Tensor; att: Tensor } {
    const [B, T, C] = x.size();
    const heads = (t: Tensor) => t.view(B, T, this.n_head, C / this.n_head).transpose(1, 2);
    const [q, k, v] = this.c_attn.forward(x).split(C, 2).map(heads);
    return { q, k, v, att: q.matmul(k.transpose(-2, -1)).mul(1.0 / Math.sqrt(k.size(-1))) };
  }

  /** The causal mask over the first T positions, as masked_fill wants it: true where masked out. */
  masked(T: number): Tensor {
    return this.bias.slice(2, 0, T).slice(3, 0, T).eq(0);
  }

  /** (B, nh, T, hs) -> (B, T, C), projected. */
  merge(y: Tensor): Tensor {
    const [B, , T, hs] = y.size();
    return this.c_proj.forward(y.transpose(1, 2).contiguous().view(B, T, this.n_head * hs));
  }

  /** `weights` are the attention weights when a block returns them (HF's output_attentions), else null. */
  forward(x: Tensor): { y: Tensor; weights: Tensor | null } {
    const { v, att } = this.scores(x);
    const weights = F.softmax(att.maskedFill(this.masked(x.size(1)), -Infinity), -1);
    return { y: this.merge(weights.matmul(v)), weights: null };
  }
}

/** Near miss: the weights are returned too, so they must be written out; the fused kernel never forms them. */
class ReturnsWeights extends SelfAttention {
  forward(x: Tensor): { y: Tensor; weights: Tensor | null } {
    const { v, att } = this.scores(x);
    const weights = F.softmax(att.maskedFill(this.masked(x.size(1)), -Infinity), -1);
    return { y: this.merge(weights.matmul(v)), weights };
  }
}

/** Near miss: the mask buffer is causal but for one element, so it cannot be proved causal. */
class FlippedMask extends SelfAttention {
  causalMask(n: number): Tensor {
    const mask = Array.from({ length: n * n }, (_, i) => Number(i % n <= Math.floor(i / n)));
    mask[3 * n + 1] = 0; // query 3 no longer sees key 1: a typo-sized bug that a causal kernel would hide
    return tensor(mask, [1, 1, n, n]);
  }
}

/** Near miss: softmax over the queries (dim -2): each key's weights sum to one, not each query's. */
class SoftmaxOverQueries extends SelfAttention {
  forward(x: Tensor): { y: Tensor; weights: Tensor | null } {
    const { v, att } = this.scores(x);
    const weights = F.softmax(att.maskedFill(this.masked(x.size(1)), -Infinity), -2);
    return { y: this.merge(weights.matmul(v)), weights: null };
  }
}

/** Near miss: masked scores are -1e4, not -inf, so masked keys keep a (tiny) weight. */
class FiniteFill extends SelfAttention {
  forward(x: Tensor): { y: Tensor; weights: Tensor | null } {
    const { v, att } = this.scores(x);
    const weights = F.softmax(att.maskedFill(this.masked(x.size(1)), -1e4), -1);
    return { y: this.merge(weights.matmul(v)), weights: null };
  }
}

class Block extends Module {
  ln: nn.LayerNorm;
  attn: SelfAttention;

  constructor(config: NearMissConfig, attn: SelfAttention) {
    super();
    this.ln = new nn.LayerNorm(config.n_embd);
    this.attn = attn;
  }

  forward(x: Tensor): { x: Tensor; weights: Tensor | null } {
    const { y, weights } = this.attn.forward(this.ln.forward(x));
    return { x: x.add(y), weights };
  }
}

export class NearMissGPT extends Module {
  transformer: ModuleDict<{ wte: nn.Embedding; wpe: nn.Embedding; h: ModuleList<Block>; ln_f: nn.LayerNorm }>;
  lm_head: nn.Linear;
  config: NearMissConfig;

  constructor(config: NearMissConfig) {
    super();
    this.config = config;
    const attentions = [SelfAttention, ReturnsWeights, FlippedMask, SoftmaxOverQueries, FiniteFill];
    const blocks = attentions.map((Attention) => new Block(config, new Attention(config)));
    this.transformer = new ModuleDict({
      wte: new nn.Embedding(config.vocab_size, config.n_embd),
      wpe: new nn.Embedding(config.block_size, config.n_embd),
      h: new ModuleList(blocks),
      ln_f: new nn.LayerNorm(config.n_embd),
    });
    this.lm_head = new nn.Linear(config.n_embd, config.vocab_size, false);
  }

  /** Logits, and the attention weights of the blocks that return them (h.1's). */
  forward(idx: Tensor): { logits: Tensor; attentions: Tensor[] } {
    const [, t] = idx.size();
    let x = this.transformer.wte.forward(idx).add(this.transformer.wpe.forward(F.arange(0, t)));
    const attentions: Tensor[] = [];
    for (const block of this.transformer.h) {
      const out = block.forward(x);
      x = out.x;
      if (out.weights) attentions.push(out.weights);
    }
    return { logits: this.lm_head.forward(this.transformer.ln_f.forward(x)), attentions };
  }
}

export default function createModel(config: Partial<NearMissConfig> = {}): NearMissGPT {
  return new NearMissGPT({ ...defaultConfig, ...config });
}
