"""SAE training speed: our trainer against minimal hand-written PyTorch loops of the same shapes.

The minimal loop is the plain "textbook" step (dense encode, top-k, scatter, dense decode, Adam,
renormalise the decoder) with nothing else: no data pipeline, no metrics, no dead-latent tracking.
Ratios above 1 mean our trainer, with all of that, is faster than the bare loop.

    python benchmarks/sae_train.py [--d 192] [--steps 24] [--threads 2]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from microw_core.sae import SAETrainer, TrainConfig
from microw_core.sae.trainer import pick_device


def minimal_loop(arch: str, data: torch.Tensor, width: int, k: int, batch: int, steps: int,
                 device: torch.device, bf16: bool = False) -> float:
    """Tokens/s of a bare training loop (bf16: under autocast); the first 3 steps are warm-up, not timed."""
    d = data.shape[1]
    torch.manual_seed(0)
    W_dec = torch.randn(width, d, device=device)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_dec.requires_grad_()
    W_enc = W_dec.detach().t().clone().requires_grad_()
    b_enc = torch.zeros(width, device=device, requires_grad=True)
    b_dec = data[:4096].mean(0).to(device).requires_grad_()
    optimizer = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=1e-4)
    batches = data.to(device).split(batch)
    for step in range(steps + 3):
        if step == 3:
            _sync(device)
            start = time.perf_counter()
        x = batches[step % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pre = (x - b_dec) @ W_enc + b_enc
            if arch == "topk":
                top = pre.topk(k, dim=-1)
                f = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
            elif arch == "batchtopk":
                flat = pre.relu().flatten()
                top = flat.topk(k * len(x))
                f = torch.zeros_like(flat).scatter(-1, top.indices, top.values).view_as(pre)
            else:
                f = pre.relu()
            x_hat = f @ W_dec + b_dec
        loss = (x_hat.float() - x).pow(2).sum(-1).mean()
        if arch == "relu":
            loss = loss + 1.0 * f.sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            W_dec /= W_dec.norm(dim=1, keepdim=True)
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def our_trainer(arch: str, data: torch.Tensor, width: int, k: int, batch: int, steps: int, device: torch.device,
                bf16: bool = False) -> float:
    """Tokens/s of SAETrainer over the same number of steps, data pipeline and metrics included."""
    log_every = max(1, steps // 4)
    cfg = TrainConfig(arch=arch, width=width, k=k if "topk" in arch else None, tokens=(steps + log_every) * batch,
                      batch_size=batch, buffer_tokens=4 * batch, init_tokens=4096, log_every=log_every,
                      device=str(device), bf16=bf16)
    chunks = data.split(16_384)
    history = SAETrainer(cfg, data.shape[1]).fit(lambda: iter(chunks))[0].history
    # The first window holds one-off warm-up costs (allocations), like the minimal loop's untimed steps.
    timed = history[1:]
    tokens = sum(h["tokens"] - prev["tokens"] for prev, h in zip(history, timed))
    return tokens / (timed[-1]["seconds"] - history[0]["seconds"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=192, help="activation width (the demo model's d_model)")
    parser.add_argument("--expansion", type=int, default=16)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    width = args.d * args.expansion
    g = torch.Generator().manual_seed(0)
    # Activation-like data: a shared offset plus sparse combinations of fixed directions.
    directions = torch.randn(4 * width, args.d, generator=g)
    active = torch.randint(0, 4 * width, (65_536, 24), generator=g)
    weights = torch.rand(65_536, 24, generator=g).pow(3) * 4
    data = torch.nn.functional.embedding_bag(active, directions, per_sample_weights=weights, mode="sum") + 3.0

    report: dict = {"device": str(device), "threads": torch.get_num_threads(), "d": args.d, "width": width,
                    "k": args.k, "batch": args.batch, "steps": args.steps}
    # Same precision on both sides: float32 everywhere, then bfloat16 (our latent selection against
    # the minimal loop under autocast); each pair runs back to back so load changes hit both alike.
    runs = [(arch, False) for arch in ("topk", "relu", "batchtopk")] + [("topk", True)]
    for arch, bf16 in runs:
        ours = our_trainer(arch, data, width, args.k, args.batch, args.steps, device, bf16=bf16)
        baseline = minimal_loop(arch, data, width, args.k, args.batch, args.steps, device, bf16=bf16)
        name = f"{arch}_bf16" if bf16 else arch
        report[f"{name}_tokens_per_s"] = round(ours)
        report[f"{name}_minimal_loop_tokens_per_s"] = round(baseline)
        report[f"{name}_ratio"] = round(ours / baseline, 3)
        print(f"{name:10s} ours {ours:10.0f} tok/s   minimal loop {baseline:10.0f} tok/s   ratio {ours / baseline:.2f}")
    report["ratio"] = report["topk_ratio"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
