// A model's config checked against its defaults. MODEL.ts may export `defaultConfig` beside its factory
// (nanoGPT's GPTConfig defaults); a config key the defaults lack, or a value of another type than its
// default's, is refused before the model is built, where it would build something else without a word
// (`"n_layer": "two"` makes a model of no layers). Callers give the error its code and name the source.

/** The value types a default can have, each with its test and the words a message uses for it. */
const KINDS: readonly { of: (v: unknown) => boolean; test: (v: unknown) => boolean; name: string }[] = [
  { of: (v) => typeof v === 'number', test: (v) => typeof v === 'number' && Number.isFinite(v), name: 'a number' },
  { of: (v) => typeof v === 'boolean', test: (v) => typeof v === 'boolean', name: 'true or false' },
  { of: (v) => typeof v === 'string', test: (v) => typeof v === 'string', name: 'a string' },
  { of: Array.isArray, test: Array.isArray, name: 'an array' },
  { of: (v) => typeof v === 'object' && v !== null, test: (v) => typeof v === 'object' && v !== null && !Array.isArray(v), name: 'an object' },
];

/** The model module's `defaultConfig` export, when it has one that is a plain object. */
export function defaultConfigOf(mod: unknown): Record<string, unknown> | undefined {
  const d = (mod as { defaultConfig?: unknown } | null)?.defaultConfig;
  return d && typeof d === 'object' && !Array.isArray(d) ? (d as Record<string, unknown>) : undefined;
}

/** What is wrong with `config` for a model with these defaults (the first problem), or undefined. A null default takes anything. */
export function configProblem(config: Readonly<Record<string, unknown>>, defaultConfig: object): string | undefined {
  const defaults = defaultConfig as Readonly<Record<string, unknown>>;
  for (const [key, value] of Object.entries(config)) {
    if (!Object.hasOwn(defaults, key)) return `unknown key "${key}"; the model's config has ${Object.keys(defaults).join(', ')}`;
    const kind = KINDS.find((k) => k.of(defaults[key]));
    if (kind && !kind.test(value)) return `key "${key}" must be ${kind.name} (its default is ${JSON.stringify(defaults[key])}), got ${JSON.stringify(value)}`;
  }
  return undefined;
}
