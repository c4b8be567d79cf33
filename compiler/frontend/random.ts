// Seedable randomness for init, dropout seeds and sampling: mulberry32 with Box-Muller normals.

let state = 1337 >>> 0;

/** Like torch.manual_seed: everything random in kiln follows from this seed. */
export function manualSeed(seed: number): void {
  state = seed >>> 0;
}

/** Uniform in [0, 1). */
export function random(): number {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

/** A standard normal sample. */
export function randn(): number {
  const u = 1 - random();
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** A fresh 31-bit seed for a dropout node. */
export function nextSeed(): number {
  return Math.floor(random() * 0x7fffffff);
}
