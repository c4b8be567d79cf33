// Compiled code is never stale, on the cpu backend: see guard-cases.ts.
import { guardCases } from './guard-cases.ts';

guardCases('cpu');
