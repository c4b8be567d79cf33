// The user's manual attention, spelled as nanoGPT's model.py spells it when flash is off: a causal
// tril buffer sliced to [:T, :T], masked_fill with -inf, softmax, then the weights times v. Shared by
// the f16 tests, which show that kiln fuses it and gives it the overflow guard in f16.

import { F, Module, type Tensor } from '../index.ts';

export class ManualAttention extends Module {
  declare bias: Tensor;
  constructor(block: number) {
    super();
    this.registerBuffer('bias', F.tril(F.ones([block, block])).view(1, 1, block, block));
  }
  forward(q: Tensor, k: Tensor, v: Tensor): Tensor {
    const T = q.size(-2);
    let att = q.matmul(k.transpose(-2, -1)).mul(1.0 / Math.sqrt(k.size(-1)));
    att = att.maskedFill(this.bias.slice(2, 0, T).slice(3, 0, T).eq(0), -Infinity);
    att = F.softmax(att, -1);
    return att.matmul(v);
  }
}
