// nanoGPT's model.py, ported line for line to kiln's TypeScript front end.
// References: 1) OpenAI's GPT-2 TensorFlow code, 2) huggingface/transformers' PyTorch GPT-2,
// via Karpathy's nanoGPT (https://github.com/karpathy/nanoGPT/blob/master/model.py).

import { F, Module, ModuleDict, ModuleList, type Tensor, manualSeed, nn, noGrad, random, randn, tensor } from '../../index.ts';

/** nanoGPT's LayerNorm, with an optional bias (PyTorch's has none to switch off). */
class LayerNorm extends nn.LayerNorm {
  constructor(ndim: number, bias: boolean) {
    super(ndim, bias);
  }
}

export interface GPTConfig {
  block_size: number;
  vocab_size: number; // GPT-2's 50257, padded up to a multiple of 64 for efficiency
  n_layer: number;
  n_head: number;
  n_embd: number;
  dropout: number;
  bias: boolean; // true: bias in Linears and LayerNorms, like GPT-2; false: a bit better and faster
  /** scaled_dot_product_attention (true) or the manual attention chain (false). */
  flash: boolean;
  /** With flash: pass the causal mask explicitly (bias[:, :, :T, :T] != 0) and isCausal false. */
  sdpa_mask: boolean;
}

export const defaultConfig: GPTConfig = {
  block_size: 1024,
  vocab_size: 50304,
  n_layer: 12,
  n_head: 12,
  n_embd: 768,
  dropout: 0.0,
  bias: true,
  flash: true,
  sdpa_mask: false,
};

class CausalSelfAttention extends Module {
  c_attn: nn.Linear;
  c_proj: nn.Linear;
  attn_dropout: nn.Dropout;
  resid_dropout: nn.Dropout;
  n_head: number;
  n_embd: number;
  dropout: number;
  flash: boolean;
  sdpa_mask: boolean;
  declare bias: Tensor;

  constructor(config: GPTConfig) {
    super();
    if (config.n_embd % config.n_head !== 0) throw new Error(`n_embd ${config.n_embd} is not a multiple of n_head ${config.n_head}`);
    // key, query, value projections for all heads, but in a batch
    this.c_attn = new nn.Linear(config.n_embd, 3 * config.n_embd, config.bias);
    // output projection
    this.c_proj = new nn.Linear(config.n_embd, config.n_embd, config.bias);
    // regularization
    this.attn_dropout = new nn.Dropout(config.dropout);
    this.resid_dropout = new nn.Dropout(config.dropout);
    this.n_head = config.n_head;
    this.n_embd = config.n_embd;
    this.dropout = config.dropout;
    this.flash = config.flash;
    this.sdpa_mask = config.sdpa_mask;
    if (!this.flash || this.sdpa_mask) {
      // causal mask to ensure that attention is only applied to the left in the input sequence
      const n = config.block_size;
      this.registerBuffer('bias', F.tril(F.ones([n, n])).view(1, 1, n, n));
    }
  }

  forward(x: Tensor): Tensor {
    const [B, T, C] = x.size(); // batch size, sequence length, embedding dimensionality (n_embd)

    // calculate query, key, values for all heads in batch and move head forward to be the batch dim
    let [q, k, v] = this.c_attn.forward(x).split(this.n_embd, 2);
    k = k.view(B, T, this.n_head, C / this.n_head).transpose(1, 2); // (B, nh, T, hs)
    q = q.view(B, T, this.n_head, C / this.n_head).transpose(1, 2); // (B, nh, T, hs)
    v = v.view(B, T, this.n_head, C / this.n_head).transpose(1, 2); // (B, nh, T, hs)

    // causal self-attention; Self-attend: (B, nh, T, hs) x (B, nh, hs, T) -> (B, nh, T, T)
    let y: Tensor;
    if (this.flash && this.sdpa_mask) {
      // the seed's generic variant: an explicit boolean mask instead of isCausal
      const mask = this.bias.slice(2, 0, T).slice(3, 0, T).ne(0);
      y = F.scaledDotProductAttention(q, k, v, { attnMask: mask, dropoutP: this.training ? this.dropout : 0, isCausal: false });
    } else if (this.flash) {
      // efficient attention using Flash Attention CUDA kernels
      y = F.scaledDotProductAttention(q, k, v, { attnMask: null, dropoutP: this.training ? this.dropout : 0, isCausal: true });
    } else {
      // manual implementation of attention
      let att = q.matmul(k.transpose(-2, -1)).mul(1.0 / Math.sqrt(k.size(-1)));
      att = att.maskedFill(this.bias.slice(2, 0, T).slice(3, 0, T).eq(0), -Infinity);
      att = F.softmax(att, -1);
      att = this.attn_dropout.forward(att);
      y = att.matmul(v); // (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)
    }
    y = y.transpose(1, 2).contiguous().view(B, T, C); // re-assemble all head outputs side by side

    // output projection
    y = this.resid_dropout.forward(this.c_proj.forward(y));
    return y;
  }
}

class MLP extends Module {
  c_fc: nn.Linear;
  gelu: nn.GELU;
  c_proj: nn.Linear;
  dropout: nn.Dropout;

  constructor(config: GPTConfig) {
    super();
    this.c_fc = new nn.Linear(config.n_embd, 4 * config.n_embd, config.bias);
    this.gelu = new nn.GELU();
    this.c_proj = new nn.Linear(4 * config.n_embd, config.n_embd, config.bias);
    this.dropout = new nn.Dropout(config.dropout);
  }

  forward(x: Tensor): Tensor {
    x = this.c_fc.forward(x);
    x = this.gelu.forward(x);
    x = this.c_proj.forward(x);
    x = this.dropout.forward(x);
    return x;
  }
}

class Block extends Module {
  ln_1: LayerNorm;
  attn: CausalSelfAttention;
  ln_2: LayerNorm;
  mlp: MLP;

  constructor(config: GPTConfig) {
    super();
    this.ln_1 = new LayerNorm(config.n_embd, config.bias);
    this.attn = new CausalSelfAttention(config);
    this.ln_2 = new LayerNorm(config.n_embd, config.bias);
    this.mlp = new MLP(config);
  }

  forward(x: Tensor): Tensor {
    x = x.add(this.attn.forward(this.ln_1.forward(x)));
    x = x.add(this.mlp.forward(this.ln_2.forward(x)));
    return x;
  }
}

export interface GPTOutput {
  logits: Tensor;
  loss: Tensor | null;
}

export class GPT extends Module {
  config: GPTConfig;
  transformer: ModuleDict<{ wte: nn.Embedding; wpe: nn.Embedding; drop: nn.Dropout; h: ModuleList<Block>; ln_f: LayerNorm }>;
  lm_head: nn.Linear;

  constructor(config: GPTConfig) {
    super();
    this.config = config;
    this.transformer = new ModuleDict({
      wte: new nn.Embedding(config.vocab_size, config.n_embd),
      wpe: new nn.Embedding(config.block_size, config.n_embd),
      drop: new nn.Dropout(config.dropout),
      h: new ModuleList(Array.from({ length: config.n_layer }, () => new Block(config))),
      ln_f: new LayerNorm(config.n_embd, config.bias),
    });
    this.lm_head = new nn.Linear(config.n_embd, config.vocab_size, false);
    // with weight tying when using torch.compile() some warnings get generated:
    // "UserWarning: functional_call was passed multiple values for tied weights."
    // This behavior is deprecated and will be an error in future versions
    // not 100% sure what this is, so far seems to be harmless. TODO investigate
    this.transformer.wte.weight = this.lm_head.weight; // https://paperswithcode.com/method/weight-tying

    // init all weights
    for (const [, m] of this.namedModules()) this.initWeights(m);
    // apply special scaled init to the residual projections, per GPT-2 paper
    for (const [pn, p] of this.namedParameters()) {
      if (pn.endsWith('c_proj.weight')) p.assign({ type: p.type, data: normal(p.numel(), 0.02 / Math.sqrt(2 * config.n_layer)) });
    }
  }

  /** Number of parameters; the position embeddings are left out by default, as nanoGPT reports. */
  getNumParams(nonEmbedding = true): number {
    let n = this.parameters().reduce((s, p) => s + p.numel(), 0);
    if (nonEmbedding) n -= this.transformer.wpe.weight.numel();
    return n;
  }

  private initWeights(module: Module): void {
    if (module instanceof nn.Linear) {
      module.weight.assign({ type: module.weight.type, data: normal(module.weight.numel(), 0.02) });
      if (module.bias) module.bias.assign({ type: module.bias.type, data: new Float32Array(module.bias.numel()) });
    } else if (module instanceof nn.Embedding) {
      module.weight.assign({ type: module.weight.type, data: normal(module.weight.numel(), 0.02) });
    }
  }

  forward(idx: Tensor, targets: Tensor | null = null): GPTOutput {
    const [b, t] = idx.size();
    if (t > this.config.block_size) throw new Error(`Cannot forward sequence of length ${t}, block size is only ${this.config.block_size}`);
    const pos = F.arange(0, t); // shape (t)

    // forward the GPT model itself
    const tok_emb = this.transformer.wte.forward(idx); // token embeddings of shape (b, t, n_embd)
    const pos_emb = this.transformer.wpe.forward(pos); // position embeddings of shape (t, n_embd)
    let x = this.transformer.drop.forward(tok_emb.add(pos_emb));
    for (const block of this.transformer.h) x = block.forward(x);
    x = this.transformer.ln_f.forward(x);

    let logits: Tensor;
    let loss: Tensor | null = null;
    if (targets !== null) {
      // if we are given some desired targets also calculate the loss
      logits = this.lm_head.forward(x);
      loss = F.crossEntropy(logits.view(-1, logits.size(-1)), targets.view(-1), { ignoreIndex: -1 });
    } else {
      // inference-time mini-optimization: only forward the lm_head on the very last position
      logits = this.lm_head.forward(x.slice(1, -1)); // note: x.slice(1, -1) keeps the time dim, as x[:, [-1], :]
    }
    return { logits, loss };
  }

  /**
   * Take a conditioning sequence of indices idx (i32 of shape (b,t)) and complete the sequence
   * maxNewTokens times, feeding the predictions back into the model each time. Sampling follows
   * kiln's seedable RNG (manualSeed). `forward` may be a compiled forward; eager by default.
   */
  async generate(
    idx: Tensor,
    maxNewTokens: number,
    temperature = 1.0,
    topK: number | null = null,
    forward: (idx: Tensor) => GPTOutput | Promise<GPTOutput> = (i) => this.forward(i),
  ): Promise<Tensor> {
    const [B] = idx.size();
    const rows: number[][] = [];
    const data = await idx.data();
    for (let r = 0; r < B; r++) rows.push(Array.from(data.subarray(r * idx.size(1), (r + 1) * idx.size(1))));
    for (let step = 0; step < maxNewTokens; step++) {
      // if the sequence context is growing too long we must crop it at block_size
      const ctx = rows.map((r) => r.slice(-this.config.block_size));
      const idxCond = tensor(ctx.flat(), [B, ctx[0].length], 'i32');
      // forward the model to get the logits for the index in the sequence (@torch.no_grad(): no tape)
      const { logits } = await noGrad(() => forward(idxCond));
      // pluck the logits at the final step and scale by desired temperature
      const all = await logits.data();
      const V = logits.size(-1);
      const last = logits.size(1) - 1;
      for (let r = 0; r < B; r++) {
        const row = Array.from(all.subarray((r * logits.size(1) + last) * V, (r * logits.size(1) + last + 1) * V), (l) => l / temperature);
        rows[r].push(sampleRow(row, topK));
      }
    }
    return tensor(rows.flat(), [B, rows[0].length], 'i32');
  }
}

/** Optionally crop to the top k logits, softmax, and sample one index (torch.multinomial). */
function sampleRow(logits: number[], topK: number | null): number {
  if (topK !== null) {
    const kth = [...logits].sort((a, b) => b - a)[Math.min(topK, logits.length) - 1];
    logits = logits.map((l) => (l < kth ? -Infinity : l));
  }
  const max = Math.max(...logits);
  const probs = logits.map((l) => Math.exp(l - max));
  const total = probs.reduce((a, b) => a + b, 0);
  let u = random() * total;
  for (let i = 0; i < probs.length; i++) {
    u -= probs[i];
    if (u < 0) return i;
  }
  return probs.length - 1;
}

function normal(n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = randn() * std;
  return out;
}

/** What `kiln eval` and the CLI load: a GPT from a (partial) nanoGPT config. */
export default function createModel(config: Partial<GPTConfig> = {}): GPT {
  return new GPT({ ...defaultConfig, ...config });
}

export { manualSeed };
