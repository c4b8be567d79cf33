// Importing this module registers every op. Each file holds a family; each op is one entry.
import './leaf.ts';
import './elementwise.ts';
import './shape.ts';
import './linalg.ts';
import './reduce.ts';
import './attention.ts';
import './fused_attention.ts';
import './decode_attention.ts';
import './sample.ts';
import './attention_backward.ts';
import './fused_linear_ce.ts';
import './fused_elementwise.ts';
import './matmul_epilogue.ts';
import './backward.ts';
import './optim.ts';
