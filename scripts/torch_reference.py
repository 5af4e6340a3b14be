#!/usr/bin/env python3
"""PyTorch reference for dp-bench: the WORKLOAD.md model and training step, written the way a
PyTorch user would (nn.Module, full-sequence logits and masked cross-entropy, torch.optim.AdamW),
trained on exactly the token ids of a dp-bench run, and timed like dp-bench times itself.

Modes:
  eager      one process, no distribution
  ddp        torch.nn.parallel.DistributedDataParallel (bucketed all-reduce overlapped with
             backward) over gloo on CPUs and NCCL on GPUs, one process per rank
  per-param  one dist.all_reduce per parameter gradient after backward (the course's reference)

On GPUs (`--device cuda`) rank r uses GPU r, clocks are read after torch.cuda.synchronize(), and
`--precision` picks what a PyTorch user would run: fp32, tf32 (TF32 matrix products) or bf16
(torch.autocast to bfloat16 with the fused AdamW kernel); `--compile` adds torch.compile.

It writes dp-bench's files — rank{r}_results_epoch{e}.json per rank and epoch, and run.json
(copied from the dp-bench run the examples came from, with `implementation`, world size, batch
size and library versions replaced) — so `dp-bench compare` and `cargo bench` analyse it beside
dp-bench's own runs. Usage (after a dp-bench run in RUN):

  dp-bench export-examples --workdir RUN --out examples.json
  .venv/bin/python scripts/torch_reference.py --examples examples.json --template RUN/run.json \
      --mode ddp --world-size 2 --batch-size 32 --n-epochs 6 --workdir OUT
"""

import argparse
import json
import math
import os
import random
import socket
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.attn_proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = dropout

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        x = x + F.dropout(self.attn_proj(y), p, self.training)
        h = self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x + F.dropout(h, p, self.training)


class GPT(nn.Module):
    def __init__(self, vocab, n_layer, n_embd, n_head, n_positions, dropout):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.dropout = dropout
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name:
                nn.init.ones_(p)
            elif name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))  # GPT-2 residual scaling
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx):
        t = idx.shape[1]
        pos = torch.arange(t, device=idx.device)
        x = F.dropout(self.wte(idx) + self.wpe(pos), self.dropout, self.training)
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # (B, T, V), LM head tied to wte


def collate(examples, pad, seq_len):
    """Fixed padding: inputs ids[:-1], labels ids[1:], weight 1 on target labels."""
    b = len(examples)
    inputs = torch.full((b, seq_len), pad, dtype=torch.long)
    labels = torch.full((b, seq_len), pad, dtype=torch.long)
    weights = torch.zeros((b, seq_len))
    for row, ex in enumerate(examples):
        ids, prompt_len = ex["ids"], ex["prompt_len"]
        n = min(len(ids) - 1, seq_len)
        inputs[row, :n] = torch.tensor(ids[:n])
        labels[row, :n] = torch.tensor(ids[1 : n + 1])
        weights[row, max(prompt_len - 1, 0) : n] = 1.0
    return inputs, labels, weights


def max_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def write_json(path, value):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def step_flops(dims, vocab, sequences, seq_len, targets):
    """dp-bench's count of a step's matrix-product FLOPs (GptConfig::step_flops): the model's work
    as WORKLOAD.md defines it (the head only at target positions), so both implementations'
    model FLOPs utilisation counts the same work."""
    c, layers = dims["n_embd"], dims["n_layer"]
    b, t = sequences, seq_len
    return layers * (6 * 12 * c * c * b * t + 12 * t * t * c * b) + 6 * c * vocab * targets


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(rank, args):
    world = args.world_size
    if args.bind and args.device == "cpu":  # as `mpirun -bind-to core:T` does for dp-bench, among the allowed cores
        allowed = sorted(os.sched_getaffinity(0))
        t = max(args.threads, 1)
        os.sched_setaffinity(0, {allowed[(rank * t + i) % len(allowed)] for i in range(t)})
    torch.set_num_threads(args.threads)
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
    backend = "nccl" if device.type == "cuda" else "gloo"
    if world > 1:
        dist.init_process_group(backend, rank=rank, world_size=world, device_id=device if device.type == "cuda" else None)
    data = json.load(open(args.examples))
    template = json.load(open(args.template))
    dims = template["dims"]
    torch.manual_seed(args.seed)
    model = GPT(data["vocab_size"], dims["n_layer"], dims["n_embd"], dims["n_head"],
                dims["n_positions"], template["config"]["dropout"])
    model.to(device)
    torch.manual_seed(args.seed + 1 + rank)
    trained = model
    if args.mode == "ddp":
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[rank] if device.type == "cuda" else None)
    elif world > 1:
        for p in model.parameters():
            dist.broadcast(p.data, 0)
    if args.compile:
        trained = torch.compile(trained)
    # Mixed precision as users run it: the fused AdamW kernel with autocast.
    fused = device.type == "cuda" and args.precision != "fp32"
    opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.01, fused=fused or None)
    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    examples = data["examples"]
    order = list(range(len(examples)))
    random.Random(args.seed).shuffle(order)
    seq_len = data["model_max_length"]
    local = args.batch_size // world
    steps = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    os.makedirs(args.workdir, exist_ok=True)
    trained_epochs = 0
    for epoch in range(args.n_epochs):
        # The bench's stopping rule: rank 0 looks for the stop file, and every rank learns its
        # answer, so all stop before the same epoch.
        stop = torch.tensor([1.0 if rank == 0 and args.stop_file and os.path.exists(args.stop_file) else 0.0])
        if world > 1:
            dist.broadcast(stop, 0)
        if stop.item() > 0:
            break
        trained_epochs = epoch + 1
        trained.train()
        tokens = target_tokens = 0
        flops = allreduce_time = data_time = loss_sum = 0.0
        if world > 1:
            dist.barrier()
        sync(device)
        start = time.perf_counter()
        for step in steps:
            t0 = time.perf_counter()
            mine = [examples[i] for i in step[rank::world]]
            global_targets = sum(max(0, len(examples[i]["ids"]) - max(examples[i]["prompt_len"] - 1, 0) - 1)
                                 for i in step)
            inputs, labels, weights = collate(mine, data["pad"], seq_len)
            targets = int(weights.sum().item())
            inputs, labels, weights = (x.to(device, non_blocking=True) for x in (inputs, labels, weights))
            data_time += time.perf_counter() - t0
            opt.zero_grad(set_to_none=True)
            with autocast():
                logits = trained(inputs)
            token_loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1), reduction="none")
            loss = (token_loss * weights.view(-1)).sum()
            (loss / global_targets).backward()
            if args.mode == "per-param" and world > 1:
                t1 = time.perf_counter()
                for p in model.parameters():
                    dist.all_reduce(p.grad)
                allreduce_time += time.perf_counter() - t1
            opt.step()
            loss_sum += loss.item()
            tokens += inputs.numel()
            target_tokens += targets
            flops += step_flops(dims, data["vocab_size"], len(mine), seq_len, targets)
        sync(device)
        training_time = time.perf_counter() - start
        if world > 1:
            dist.barrier()
        total = torch.tensor([loss_sum, float(target_tokens)], dtype=torch.float64)
        if world > 1:
            total = total.to(device)
            dist.all_reduce(total)
            total = total.cpu()
        with torch.no_grad():
            checksum = sum(p.double().sum().item() for p in model.parameters())
        record = {
            "epoch": epoch, "rank": rank, "world_size": world,
            "global_batch_size": args.batch_size, "local_batch_size": local, "steps": len(steps),
            "training_time": training_time, "tokens": tokens,
            "tokens_per_sec": tokens / training_time, "target_tokens": target_tokens,
            "target_tokens_per_sec": target_tokens / training_time,
            "train_loss": total[0].item() / max(total[1].item(), 1.0),
            "compute_time": training_time - allreduce_time - data_time,
            "allreduce_time": allreduce_time, "wait_time": 0.0, "data_time": data_time,
            "max_rss_mb": max_rss_mb(), "validation_loss": None, "bleu": None, "eval_time": None,
            "param_checksum": checksum, "flops": flops,
        }
        write_json(os.path.join(args.workdir, f"rank{rank}_results_epoch{epoch}.json"), record)
        if rank == 0:
            print(f"epoch {epoch + 1}/{args.n_epochs}: {training_time:.2f} s", flush=True)
    if rank == 0:
        info = dict(template)
        info["implementation"] = f"pytorch-{args.mode}" + ("-compiled" if args.compile else "")
        info["config"] = dict(template["config"], world_size=world, batch_size=args.batch_size,
                              threads=args.threads, n_epochs=trained_epochs, device=args.device,
                              precision=args.precision)
        info["libtorch_version"] = torch.__version__
        info["mpi_library"] = f"torch.distributed {backend}" if world > 1 else "none"
        info["device"] = str(device)
        info["threads_per_rank"] = args.threads
        info["hosts"] = [socket.gethostname()] * world
        info["start_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json(os.path.join(args.workdir, "run.json"), info)
    if world > 1:
        dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", required=True, help="from `dp-bench export-examples`")
    p.add_argument("--template", required=True, help="run.json of the dp-bench run")
    p.add_argument("--mode", choices=["eager", "ddp", "per-param"], default="eager")
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16, help="GLOBAL batch")
    p.add_argument("--n-epochs", type=int, default=6)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--bind", action="store_true", help="pin rank r to its own --threads cores among those this process may use (mod their count); CPU ranks only")
    p.add_argument("--stop-file", help="stop before the next epoch once this file exists (the bench's time budget)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="rank r trains on GPU r with cuda")
    p.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32",
                   help="tf32: TF32 matrix products (GPUs); bf16: autocast to bfloat16 (+ fused AdamW on GPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--workdir", required=True)
    args = p.parse_args()
    if args.batch_size % args.world_size:
        p.error(f"--batch-size {args.batch_size} is not divisible by --world-size {args.world_size}")
    if args.device == "cuda":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            p.error("--device cuda but torch sees no CUDA device: use --device cpu or run on a GPU machine")
        if args.world_size > gpus:
            p.error(f"--world-size {args.world_size} needs {args.world_size} GPUs (one per rank, as NCCL "
                    f"requires), torch sees {gpus}: lower --world-size")
    elif args.precision == "tf32":
        p.error("--precision tf32 needs --device cuda (CPUs train in fp32, or bf16 autocast)")
    if args.world_size == 1:
        train(0, args)
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.multiprocessing.spawn(train, args=(args,), nprocs=args.world_size)


if __name__ == "__main__":
    main()
