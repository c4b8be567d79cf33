// Compiled code is never stale, on the cpu backend: see guard-cases.ts.
import { guardCases } from './guard-cases.ts';
import { guardProperty } from './guard-properties.ts';

guardCases('cpu');
guardProperty(['cpu'], 25);
