// What the sample tests (generate-sample*.test.ts) check draws against: the probabilities nanoGPT's
// sampling gives, and Pearson's chi-square with its critical values.

/** Pearson's chi-square of observed counts against probabilities. */
export function chiSquare(ids: ArrayLike<number>, probs: readonly number[]): number {
  const counts = new Array<number>(probs.length).fill(0);
  for (let i = 0; i < ids.length; i++) counts[ids[i]]++;
  return probs.reduce((x, p, i) => (p === 0 ? (counts[i] === 0 ? x : Infinity) : x + (counts[i] - ids.length * p) ** 2 / (ids.length * p)), 0);
}

/** softmax(logits / temperature) with all but the k largest dropped (k = 0: none). */
export function expectedProbs(logits: readonly number[], temperature = 1, topK = 0): number[] {
  const kth = topK > 0 ? [...logits].sort((a, b) => b - a)[topK - 1] : -Infinity;
  const w = logits.map((l) => (l >= kth ? Math.exp(l / temperature) : 0));
  const total = w.reduce((a, b) => a + b, 0);
  return w.map((x) => x / total);
}

// The 0.1% critical values of chi-square: a correct sampler fails one run in a thousand (seeds are fixed, so never here).
export const CHI2_999 = { 1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52 } as const;
