#!/usr/bin/env python3
"""PyTorch on kiln's benchmark cases that ../shared/device/torch_anchor.py does not time, in f32 and f16.

torch_anchor.py (packed beside this file) times matmul 4096^3, causal attention (manual chain and SDPA's
backends), nanoGPT's forward and training steps, each in f32, bf16 and f16. kiln's suites also have:
  attention  the causal mask given as a tensor (kiln's "fused masked" variant: SDPA with a bool attn_mask),
             and the backward (forward included: "causal attention backward B.. (forward included)")
  matmul     x @ W^T 4096^3 and the GPT-2 shapes (F.linear and a batched q @ k^T)
  nanogpt    the model made f16 by model.half() (kiln's "model.half() f16" variant)
  train      shakespeare-char with dropout 0.2 under f16 autocast with GradScaler (the anchor times it in f32 only)
Same case titles as kiln's, same record format as the anchor's, so report.ts merges both:
    python3 .device/torch_cases.py --json $OUT/torch-cases.json [--suite attention,matmul,nanogpt,train] [--quick]
    npm run bench:report -- bench.json --torch torch.json --torch torch-cases.json
Times are CUDA-event means over back-to-back runs after warm-up, in ms; f32 runs have TF32 off. One failing
case prints its error and the run goes on. --device cpu runs the same cases on the CPU (a check that the script
runs where there is no GPU: f16 on the CPU is slow and some SDPA backends do not exist there).
"""
import argparse, json, math, os, sys, time
import torch
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
# Where the project sits beside shared/ (not packed): nanogpt_model.py of ../shared/device.
sys.path.insert(1, os.path.join(here, '..', '..', '..', 'shared', 'device'))

ap = argparse.ArgumentParser()
ap.add_argument('--json', default=None)
ap.add_argument('--suite', default='attention,matmul,nanogpt,train')
ap.add_argument('--quick', action='store_true', help='fewer iterations')
ap.add_argument('--device', default='cuda')
ap.add_argument('--small', action='store_true', help='tiny shapes (with --device cpu: a check that every case runs)')
args = ap.parse_args()
suites = set(args.suite.split(','))
dev = args.device
cuda = dev == 'cuda'
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
ITERS = 5 if args.quick or args.small else 20
records = []
info = {'torch': torch.__version__, 'gpu': torch.cuda.get_device_name(0) if cuda else 'cpu', 'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
print('torch', info['torch'], info['gpu'], flush=True)
DT = {'f32': torch.float32, 'f16': torch.float16}


def sync():
    if cuda:
        torch.cuda.synchronize()


def bench(fn, iters=ITERS, warm=3):
    for _ in range(warm):
        fn()
    sync()
    if not cuda:
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) * 1000 / iters
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / iters


def record(suite, case, variant, ms, **extra):
    records.append({'suite': suite, 'case': case, 'variant': variant, 'ms': ms, 'extra': extra})
    tail = ' '.join(f'{k}={v}' for k, v in extra.items())
    print(f'{suite:9s} {case:60s} {variant:36s} {ms:10.3f} ms {tail}', flush=True)


def guarded(suite, case, variant, fn):
    """Runs one case; a failure prints one line and becomes a record without a time, named as the case would have been."""
    try:
        fn()
    except Exception as ex:
        print(f'{suite} {case} {variant}: FAILED {type(ex).__name__}: {str(ex)[:200]}', flush=True)
        records.append({'suite': suite, 'case': case, 'variant': variant, 'ms': None, 'extra': {'error': str(ex)[:200]}})
    finally:
        if cuda:
            torch.cuda.empty_cache()


def sdpa_backends():
    """SDPA's backends by name, pinned with sdpa_kernel (torch >= 2.3); [] where torch has no such API."""
    try:
        from torch.nn.attention import SDPBackend
    except ImportError:
        return []
    return [('math', SDPBackend.MATH), ('efficient', SDPBackend.EFFICIENT_ATTENTION), ('flash', SDPBackend.FLASH_ATTENTION), ('cudnn', SDPBackend.CUDNN_ATTENTION)]


def pinned(backend):
    from torch.nn.attention import sdpa_kernel
    return sdpa_kernel(backend)


# kiln's attention shapes: GPT-2 124M's, shakespeare-char's, a D = 128 head at GPT-2's length (bench.ts).
ATTENTION_SHAPES = ((1, 2, 16, 8),) if args.small else ((12, 12, 1024, 64), (64, 6, 256, 64), (12, 12, 1024, 128))

if 'attention' in suites:
    for (B, H, T, D) in ATTENTION_SHAPES:
        fwd_case = f'causal attention B{B} H{H} T{T} D{D}'
        bwd_case = f'causal attention backward B{B} H{H} T{T} D{D} (forward included)'
        for dn, dt in DT.items():
            q, k, v, dout = (torch.randn(B, H, T, D, device=dev, dtype=dt) * 0.5 for _ in range(4))
            keep = torch.tril(torch.ones(T, T, device=dev, dtype=torch.bool))
            # kiln's "fused masked": the causal mask as a bool tensor (True = attend); SDPA picks the backend it can.
            guarded('attention', fwd_case, f'torch sdpa masked {dn}',
                    lambda: record('attention', fwd_case, f'torch sdpa masked {dn}', bench(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=keep))))

            # Backward: forward and dq, dk, dv from the output's gradient, as kiln's backward case (forward included).
            qg, kg, vg = (x.clone().requires_grad_(True) for x in (q, k, v))
            fill = (~keep).view(1, 1, T, T)

            def manual_step():
                att = (qg @ kg.transpose(-2, -1)) * (1.0 / math.sqrt(D))
                att = att.masked_fill(fill, float('-inf'))
                y = F.softmax(att, dim=-1) @ vg
                return torch.autograd.grad(y, (qg, kg, vg), dout)

            guarded('attention', bwd_case, f'torch manual {dn}', lambda: record('attention', bwd_case, f'torch manual {dn}', bench(manual_step)))

            def sdpa_step():
                y = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
                return torch.autograd.grad(y, (qg, kg, vg), dout)

            guarded('attention', bwd_case, f'torch sdpa {dn}', lambda: record('attention', bwd_case, f'torch sdpa {dn}', bench(sdpa_step)))
            for name, be in sdpa_backends():
                def run(be=be, name=name):
                    with pinned(be):
                        ms = bench(sdpa_step)
                    record('attention', bwd_case, f'torch sdpa {name} {dn}', ms)
                guarded('attention', bwd_case, f'torch sdpa {name} {dn}', run)
            del q, k, v, dout, qg, kg, vg, keep, fill

if 'matmul' in suites:
    # [case title as kiln's, a's shape, b's shape, b transposed (x @ W^T, F.linear)]
    cases = [('x @ W^T [2,24,64] x [48,64]', (2, 24, 64), (48, 64), True)] if args.small else [
        ('x @ W^T 4096^3 (nn.Linear)', (4096, 4096), (4096, 4096), True),
        ('GPT-2 MLP x @ W^T [12,1024,768] x [3072,768]', (12, 1024, 768), (3072, 768), True),
        ('GPT-2 MLP x @ W^T [12,1024,3072] x [768,3072]', (12, 1024, 3072), (768, 3072), True),
        ('GPT-2 attention q @ k^T [144,1024,64] x [144,1024,64]', (144, 1024, 64), (144, 1024, 64), True),
    ]
    for case, a_shape, b_shape, tb in cases:
        for dn, dt in DT.items():
            def run(case=case, a_shape=a_shape, b_shape=b_shape, tb=tb, dn=dn, dt=dt):
                a = torch.randn(*a_shape, device=dev, dtype=dt)
                b = torch.randn(*b_shape, device=dev, dtype=dt)
                if len(b_shape) == 2:
                    fn = lambda: F.linear(a, b)  # x @ W^T, as nn.Linear
                else:
                    fn = lambda: a @ b.transpose(-2, -1)
                ms = bench(fn)
                m, kk = math.prod(a_shape[:-1]), a_shape[-1]
                n = b_shape[-2] if tb else b_shape[-1]
                flops = 2 * m * n * kk if len(b_shape) == 2 else 2 * math.prod(a_shape) * n
                record('matmul', case, f'torch {dn}', ms, tflops=round(flops / ms / 1e9, 1))
            guarded('matmul', case, f'torch {dn}', run)


def gpt(cfg_name, nanogpt):
    if cfg_name == 'gpt2':
        return nanogpt.GPTConfig(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=False)
    if cfg_name == 'tiny':
        return nanogpt.GPTConfig(block_size=16, vocab_size=11, n_layer=1, n_head=2, n_embd=16, dropout=0.0, bias=False)
    return nanogpt.GPTConfig(block_size=256, vocab_size=65, n_layer=6, n_head=6, n_embd=384, dropout=0.0, bias=False)


def make_model(nanogpt, cfg, flash, dropout=0.0):
    """nanoGPT's GPT with flash (SDPA) on or off, as torch_anchor.py builds it."""
    torch.manual_seed(0)
    cfg.dropout = dropout
    m = nanogpt.GPT(cfg).to(dev)
    for blk in m.transformer.h:
        blk.attn.flash = flash
        if not flash and not hasattr(blk.attn, 'bias'):
            blk.attn.register_buffer('bias', torch.tril(torch.ones(cfg.block_size, cfg.block_size, device=dev)).view(1, 1, cfg.block_size, cfg.block_size))
    return m


if 'nanogpt' in suites or 'train' in suites:
    import nanogpt_model as nanogpt  # nanoGPT's model.py, packed beside this file by ../shared/device/pack.sh

if 'nanogpt' in suites:
    # kiln's "compiled manual, fused, model.half() f16": the whole model in f16, no autocast.
    configs = (('tiny', 1, 8, 'nanoGPT tiny forward B1 T8'),) if args.small else (
        ('gpt2', 12, 1024, 'nanoGPT GPT-2 124M forward B12 T1024'), ('char', 64, 256, 'nanoGPT shakespeare-char forward B64 T256'))
    for cfg_name, B, T, label in configs:
        for flash in (False, True):
            def run(cfg_name=cfg_name, B=B, T=T, label=label, flash=flash):
                cfg = gpt(cfg_name, nanogpt)
                m = make_model(nanogpt, cfg, flash).eval().half()
                x = torch.randint(0, cfg.vocab_size, (B, T), device=dev)

                def fwd():
                    with torch.no_grad():
                        m(x)  # inference forward: logits of the last position, as kiln's case

                record('nanogpt', label, f'torch eager {"sdpa" if flash else "manual"} model.half() f16', bench(fwd))
            guarded('nanogpt', label, f'torch eager {"sdpa" if flash else "manual"} model.half() f16', run)

if 'train' in suites:
    # shakespeare-char with dropout 0.2 under f16 autocast and GradScaler, as kiln's "train step ... f16" of that case.
    cfg_name, B, T = ('tiny', 2, 8) if args.small else ('char', 64, 256)
    label = 'nanoGPT tiny, dropout 0.2 training step B2 T8' if args.small else 'nanoGPT shakespeare-char, dropout 0.2 training step B64 T256'
    for flash in (False, True):
        def run(flash=flash):
            cfg = gpt(cfg_name, nanogpt)
            m = make_model(nanogpt, cfg, flash, 0.2)
            opt = m.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cuda' if cuda else 'cpu')
            x = torch.randint(0, cfg.vocab_size, (B, T), device=dev)
            y = torch.randint(0, cfg.vocab_size, (B, T), device=dev)
            scaler = torch.amp.GradScaler(dev)

            def step():
                with torch.autocast(dev, dtype=torch.float16):
                    _, loss = m(x, y)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)

            if cuda:
                torch.cuda.reset_peak_memory_stats()
            ms = bench(step, iters=max(3, ITERS // 2))
            extra = {'peak_mib': round(torch.cuda.max_memory_allocated() / 2 ** 20)} if cuda else {}
            record('train', label, f'torch eager {"sdpa" if flash else "manual"} f16 dropout 0.2', ms, **extra)
        guarded('train', label, f'torch eager {"sdpa" if flash else "manual"} f16 dropout 0.2', run)

if args.json:
    with open(args.json, 'w') as f:
        json.dump({'info': info, 'records': records}, f, indent=1)
print('done', flush=True)
