// Regenerates passes/attention-patterns.generated.ts from the spellings in compiler/attention-spellings.ts:
// `npm run gen:attention-patterns`. test/attention-spellings.test.ts checks that the file is current.

import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { attentionPatternsFile } from '../compiler/attention-spellings.ts';

const target = fileURLToPath(new URL('../passes/attention-patterns.generated.ts', import.meta.url));
writeFileSync(target, attentionPatternsFile());
console.log(`wrote ${target}`);
