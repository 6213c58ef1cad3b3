"""
Benchmark: python -m loraxs_mini.bench

Measures, in one run on the current device, with GPT-2 124M's shape (random
weights: the cost is the same as pretrained):

  1. training-step time (forward, backward, AdamW step) for full fine-tuning,
     LoRA, VeRA, LoRA-XS and TinyLoRA at rank r, every linear layer of every block
     adapted (the fused c_attn taken whole, the one layout PEFT can express on
     GPT-2), side by side with transformers + PEFT when both are installed.
     LoRA-XS's stand-in there is PEFT LoRA with A and B frozen and an r x r
     matrix between them, the layout of the paper's code; its B is left at
     PEFT's zero instead of U_r, so it could never learn, but every step does
     the same work. Two workloads:
        finetune  the loss covers the last quarter of each sequence (the completion),
        lm        the loss covers every token;
  2. the peak memory of each configuration, each in a fresh process;
  3. LoRA-XS set-up time (the SVD of every adapted matrix) for each SVD
     method, on GPT-2 124M and on gpt2-xl's shape, and how far each method's
     top-r subspace is from a float64 SVD;
  4. inference with merged adapters against the plain model;
  5. on CUDA (or with --throughput): tokens per second and model FLOPs
     utilisation of full fine-tuning and LoRA-XS, at sequence length 1024 on
     CUDA (bf16 autocast, optionally torch.compile).

The machine may be shared and its speed may drift: configurations are timed
in interleaved rounds (one step of each, again and again, after warm-up steps
of their own), so a slow minute slows all of them alike; the median is reported.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from .adapters import (
    EVERY_LINEAR,
    METHODS,
    SVD_METHODS,
    FullFineTuning,
    LoRALinear,
    LoRAXSLinear,
    add_adapters,
    find_targets,
    merge_adapters,
    parameter_counts,
    truncated_svd,
)
from .cli import ArgumentParser
from .device import autocast, pick_device
from .errors import LoraxsError, friendly_errors
from .measure import peak_memory_bytes
from .model import GPT, IGNORE_INDEX, PRESETS, GPTConfig
from .recipe import GRAD_CLIP

OURS = tuple(name for name, method in METHODS.items() if method.trains)  # zero-shot trains nothing to time
LORA, LORAXS, FULL = LoRALinear.name, LoRAXSLinear.name, FullFineTuning.name  # what the report sets side by side
TARGETS = EVERY_LINEAR  # c_attn whole, as PEFT adapts it: the same matrices in both libraries
THEIRS = ("hf-full", "peft-lora", "peft-vera", "peft-loraxs")


def have_reference():
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- building the configurations


def random_batch(batch_size, seq_len, workload, device):
    """Random tokens; targets for our model and labels for transformers that score the same positions."""
    generator = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 50257, (batch_size, seq_len), generator=generator)
    labels = idx.clone()  # transformers shifts labels itself: label t is predicted at position t - 1
    if workload == "finetune":
        labels[:, : seq_len - seq_len // 4] = IGNORE_INDEX  # a prompt of 3/4, a completion of 1/4
    targets = torch.roll(labels, -1, dims=1)
    targets[:, -1] = IGNORE_INDEX
    return idx.to(device), targets.to(device), labels.to(device)


def build(name, shape, rank, batch, device):
    """(model, function computing the loss) for one configuration, on the model shape of a preset."""
    idx, targets, labels = batch
    config = GPTConfig.from_name(shape)
    torch.manual_seed(0)
    if name in OURS:
        first_step = (idx.cpu(), targets.cpu(), 1e-3)  # LoRA-SB's start; its values do not change a step's time
        model = add_adapters(GPT(config), name, rank=rank, targets=TARGETS, first_step=first_step).to(device)
        return model, lambda: model(idx, targets)[1]
    import peft
    import transformers

    hf_config = transformers.GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0,  # ours has no dropout either
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(hf_config)
    # c_proj matches both attn.c_proj and mlp.c_proj; GPT-2's Conv1D layers store W as in x out (fan_in_fan_out)
    common = {"r": rank, "target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": True}
    if name in ("peft-lora", "peft-loraxs"):
        model = peft.get_peft_model(model, peft.LoraConfig(lora_alpha=rank, lora_dropout=0.0, **common))
    elif name == "peft-vera":
        model = peft.get_peft_model(model, peft.VeraConfig(vera_dropout=0.0, **common))
    if name == "peft-loraxs":
        insert_loraxs_matrices(model, rank)
    model = model.to(device)
    return model, lambda: model(input_ids=idx, labels=labels).loss


def insert_loraxs_matrices(peft_model, rank):
    """
    The LoRA-XS paper's layout on PEFT LoRA: freeze A and B, train an r x r R
    between them. A timing stand-in only: B stays at PEFT's zero (the paper
    sets it to U_r), so this model could never learn, but each step costs the same.
    """
    import peft

    for module in peft_model.modules():
        if isinstance(module, peft.tuners.lora.LoraLayer) and "default" in module.lora_A:
            module.lora_A["default"].weight.requires_grad_(False)
            module.lora_B["default"].weight.requires_grad_(False)
            module.loraxs_R = torch.nn.Linear(rank, rank, bias=False)
            torch.nn.init.normal_(module.loraxs_R.weight, std=1e-5)
            # PEFT computes lora_B(lora_A(x)): route lora_A's output through R on its way to B.
            module.lora_A["default"].register_forward_hook(lambda _, __, output, R=module.loraxs_R: R(output))


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Trainer:
    """One configuration: its model, optimizer and step timings."""

    def __init__(self, name, args, batch):
        self.name = name
        self.model, self.loss = build(name, args.shape, args.rank, batch, args.device)
        self.model.train()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=1e-4)
        self.args, self.times = args, []
        if args.compile:
            self.model.forward = torch.compile(self.model.forward)

    def step(self):
        synchronize(self.args.device)
        start = time.perf_counter()
        with autocast(self.args.device, bf16=self.args.dtype == "bf16"):
            loss = self.loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, GRAD_CLIP)  # the step of train.py, clip included
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.args.device)
        return time.perf_counter() - start


def time_training(names, args, workload):
    """Median step time of each configuration, timed in interleaved rounds."""
    batch = random_batch(args.batch_size, args.seq_len, workload, args.device)
    trainers = []
    for name in names:
        trainer = Trainer(name, args, batch)
        for _ in range(args.warmup):
            trainer.step()
        trainers.append(trainer)
        print(f"  built {name} ({parameter_counts(trainer.model)[0]:,} trainable)", flush=True)
    for _ in range(args.steps):
        for trainer in trainers:
            trainer.times.append(trainer.step())
    results = {
        t.name: {"seconds": statistics.median(t.times), "trainable": parameter_counts(t.model)[0]} for t in trainers
    }
    del trainers
    return results


# ---------------------------------------------------------------- memory, in a fresh process each


def measure_memory(name, args, workload):
    """Peak memory of two training steps of one configuration, in a new Python process."""
    command = [sys.executable, "-m", "loraxs_mini.bench", "--memory-of", name, "--workload", workload,
               "--device", args.device, "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
               "--rank", str(args.rank), "--dtype", args.dtype, "--shape", args.shape]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"]


def memory_worker(args):
    batch = random_batch(args.batch_size, args.seq_len, args.workload, args.device)
    trainer = Trainer(args.memory_of, args, batch)
    for _ in range(2):
        trainer.step()
    print(json.dumps({"peak_bytes": peak_memory_bytes(args.device)}))


# ---------------------------------------------------------------- LoRA-XS set-up and SVD accuracy


def block_shapes(name):
    """(out, in) of the four adapted matrices of one block of a preset."""
    C = PRESETS[name]["n_embd"]
    return [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)]


def setup_times(args):
    """Seconds for add_adapters(..., 'loraxs') on GPT-2 124M (median of 3), and the SVDs alone on gpt2-xl's shape."""
    rows = []
    torch.manual_seed(0)
    base = GPT(GPTConfig.from_name(args.shape)).to(args.device)
    for method in SVD_METHODS:
        seconds = []
        for _ in range(3):  # the median of three: a shared machine's speed drifts
            model = GPT(base.config).to(args.device)
            model.load_state_dict(base.state_dict())
            synchronize(args.device)
            start = time.perf_counter()
            add_adapters(model, LORAXS, rank=args.rank, targets=TARGETS, svd=method)
            synchronize(args.device)
            seconds.append(time.perf_counter() - start)
            del model
        rows.append((args.shape, method, statistics.median(seconds)))
    if args.xl:
        layers = PRESETS["gpt2-xl"]["n_layer"]
        for method in ("gram", "randomized"):  # the full SVD would take about 10 minutes here
            total = 0.0
            for layer in range(layers):
                for shape in block_shapes("gpt2-xl"):
                    W = (torch.randn(shape, generator=torch.Generator().manual_seed(layer)) * 0.02).to(args.device)
                    synchronize(args.device)
                    start = time.perf_counter()
                    truncated_svd(W, args.rank, method)
                    synchronize(args.device)
                    total += time.perf_counter() - start
            rows.append(("gpt2-xl", method, total))
    return rows


def subspace_errors(matrices, rank):
    """Worst sine of the angle between each method's top-r left subspace and a float64 SVD's."""
    worst = dict.fromkeys(SVD_METHODS, 0.0)
    for W in matrices:
        W = W.detach().float().cpu()
        reference = torch.linalg.svd(W.double(), full_matrices=False)[0][:, :rank].float()
        for method in SVD_METHODS:
            U = truncated_svd(W, rank, method)[0]
            sine = torch.linalg.matrix_norm(U - reference @ (reference.T @ U), ord=2).item()
            worst[method] = max(worst[method], sine)
    return worst


def adapted_matrices(model):
    return [layer.weight for layer in find_targets(model, TARGETS).values()]  # the four linear layers of every block


# ---------------------------------------------------------------- merged inference


def time_inference(args):
    """Forward passes (no gradient) of the plain model, LoRA-XS unmerged, and LoRA-XS merged, interleaved."""
    idx = random_batch(args.batch_size, args.seq_len, "lm", args.device)[0]
    torch.manual_seed(0)
    plain = GPT(GPTConfig.from_name(args.shape)).to(args.device).eval()
    settings = dict(rank=args.rank, targets=TARGETS)
    adapted = add_adapters(GPT(plain.config), LORAXS, **settings).to(args.device).eval()
    merged = merge_adapters(add_adapters(GPT(plain.config), LORAXS, **settings))
    merged = merged.to(args.device).eval()
    models = {"plain": plain, "loraxs, not merged": adapted, "loraxs, merged": merged}
    times = {name: [] for name in models}
    with torch.no_grad(), autocast(args.device, bf16=args.dtype == "bf16"):
        for model in models.values():
            for _ in range(args.warmup):
                model(idx)
        for _ in range(args.steps):
            for name, model in models.items():
                synchronize(args.device)
                start = time.perf_counter()
                model(idx)
                synchronize(args.device)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# ---------------------------------------------------------------- GPU throughput


def peak_flops(device, dtype, given):
    """The device's peak FLOP/s for MFU: --peak-tflops, or known GPUs' dense bf16 peak; else None."""
    if given:
        return given * 1e12
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") and dtype == "bf16" else ""
    for key, tflops in (("H200", 989.4), ("H100", 989.4), ("A100", 312.0)):  # dense bf16
        if key in name:
            return tflops * 1e12
    return None


def flops_per_token(config, seq_len, weight_gradients=True):
    """
    Model FLOPs of one training token, nanoGPT's estimate: 6 N + 12 L C T.

    Each weight is used in one multiply-add (2 FLOPs) forward, and backward
    twice more: once for the gradient of its input (2) and once for its own
    gradient (2), hence 6 N. Attention has no weights: forward 4 L C T (scores
    and weighted sum over T tokens), backward twice that, hence 12 L C T.
    With a frozen base (LoRA, VeRA, LoRA-XS, TinyLoRA) the weight gradients are not
    computed: 4 N + 12 L C T. The adapters' own few FLOPs are left out.
    """
    with torch.device("meta"):
        parameters = GPT(config).num_parameters()
    return (6 if weight_gradients else 4) * parameters + 12 * config.n_layer * config.n_embd * seq_len


# ---------------------------------------------------------------- the report


def gibibytes(n):
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def training_table(results, memory, workload, args):
    reference = results.get("peft-lora", {}).get("seconds")
    lines = [
        f"Training step, workload `{workload}`, batch {args.batch_size} x {args.seq_len}, {args.device}, {args.dtype}:",
        "",
        "| configuration | trainable | step time | tokens/s | speed-up over PEFT LoRA | peak memory |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in results.items():
        ratio = f"{reference / row['seconds']:.2f}x" if reference else "-"
        tokens = args.batch_size * args.seq_len / row["seconds"]
        lines.append(
            f"| {name} | {row['trainable']:,} | {row['seconds']:.3f} s | {tokens:,.0f} | {ratio} "
            f"| {gibibytes(memory.get(name))} |"
        )
    ours = {name: results[name]["seconds"] for name in OURS if name in results}
    if LORAXS in ours and FULL in ours and LORA in ours:
        lines.append("")
        lines.append(
            f"LoRA-XS / LoRA step time: {ours[LORAXS] / ours[LORA]:.2f}; "
            f"LoRA-XS / full fine-tuning: {ours[LORAXS] / ours[FULL]:.2f}"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = ArgumentParser(description="Benchmark training, set-up and inference against transformers+PEFT")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda")
    parser.add_argument("--batch-size", type=int, default=None, help="default 4 on CPU, 16 on CUDA")
    parser.add_argument("--seq-len", type=int, default=None, help="default 128 on CPU, 1024 on CUDA")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--shape", default="gpt2", choices=list(PRESETS), help="the model shape (default gpt2, 124M)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workload", choices=("finetune", "lm", "both"), default="both")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default=None, help="default fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (CUDA)")
    parser.add_argument("--no-reference", action="store_true", help="skip transformers / PEFT even if installed")
    parser.add_argument("--no-xl", dest="xl", action="store_false", help="skip the SVD timing on gpt2-xl's shape")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory runs (faster)")
    parser.add_argument("--pretrained", default=None, help="a GPT-2 checkpoint for the SVD accuracy on real weights")
    parser.add_argument("--throughput", action=argparse.BooleanOptionalAction, default=None,
                        help="tokens/s and MFU of full and LoRA-XS (default: on CUDA only)")  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for MFU (auto: H100/H200)")
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # internal: one config's memory
    args = parser.parse_args(argv)
    if args.device == "auto":  # CUDA or the CPU: the timings synchronize CUDA only
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device = pick_device(args.device)  # a named device that is not there is refused, as in train.py
    cuda = args.device.startswith("cuda")
    args.batch_size = args.batch_size or (16 if cuda else 4)
    args.seq_len = args.seq_len or (1024 if cuda else 128)
    for name in ("rank", "steps", "batch_size", "seq_len"):
        if getattr(args, name) < 1:
            raise LoraxsError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    context = GPTConfig.from_name(args.shape).block_size
    if args.seq_len > context:
        raise LoraxsError(f"--seq-len {args.seq_len} is longer than {args.shape}'s context; use at most {context}")
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.throughput = cuda if args.throughput is None else args.throughput
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memory_of:
        return memory_worker(args)
    names = list(OURS) + (list(THEIRS) if have_reference() and not args.no_reference else [])
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if args.device.startswith("cuda"):
        machine += f", {torch.cuda.get_device_name(args.device)}"
    command = "python -m loraxs_mini.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    report = [f"# loraxs-mini benchmark\n\nMachine: {machine}. Command: `{command.strip()}`"]
    if len(names) == len(OURS):
        report.append("transformers / peft not installed (or --no-reference): our rows only.")

    workloads = ("finetune", "lm") if args.workload == "both" else (args.workload,)
    for workload in workloads:
        print(f"training steps, workload {workload}", flush=True)
        results = time_training(names, args, workload)
        memory = {name: measure_memory(name, args, workload) for name in names} if args.memory else {}
        report.append(training_table(results, memory, workload, args))

    print("LoRA-XS set-up", flush=True)
    rows = setup_times(args)
    lines = ["LoRA-XS set-up (the SVD of every adapted matrix), rank " + str(args.rank) + ":", "",
             "| model shape | SVD method | seconds |", "|---|---|---:|"]  # fmt: skip
    lines += [f"| {shape} | {method} | {seconds:.2f} |" for shape, method, seconds in rows]
    torch.manual_seed(0)
    accuracy = {f"random weights, {args.shape}'s shape": subspace_errors(
        adapted_matrices(GPT(GPTConfig.from_name(args.shape))), args.rank)}  # fmt: skip
    if args.pretrained:
        from .pretrained import load_pretrained

        accuracy[f"pretrained {args.pretrained}"] = subspace_errors(
            adapted_matrices(load_pretrained(args.pretrained)), args.rank
        )
    lines += ["", "Worst sine of the angle between the top-r subspace and a float64 SVD's (0 = exact):", "",
              "| weights | " + " | ".join(SVD_METHODS) + " |", "|---|" + "---:|" * len(SVD_METHODS)]  # fmt: skip
    for weights, worst in accuracy.items():
        lines.append(f"| {weights} | " + " | ".join(f"{worst[m]:.1e}" for m in SVD_METHODS) + " |")
    report.append("\n".join(lines))

    print("inference", flush=True)
    inference = time_inference(args)
    plain = inference["plain"]
    lines = [f"Inference, forward pass of {args.batch_size} x {args.seq_len} tokens:", "",
             "| model | seconds | vs plain |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {name} | {seconds:.3f} | {seconds / plain:.3f} |" for name, seconds in inference.items()]
    report.append("\n".join(lines))

    if args.throughput:
        print("throughput", flush=True)
        peak = peak_flops(args.device, args.dtype, args.peak_tflops)
        config = GPTConfig.from_name(args.shape)
        results = time_training([FULL, LORAXS], args, "lm")
        setting = f"{args.device}, {args.dtype}, batch {args.batch_size} x {args.seq_len}"
        setting += ", compiled" if args.compile else ""
        lines = [
            f"Throughput, workload `lm`, {setting}:",
            "",
            "| configuration | tokens/s | model FLOPs per token | MFU |",
            "|---|---:|---:|---:|",
        ]
        for name, row in results.items():
            tokens = args.batch_size * args.seq_len / row["seconds"]
            per_token = flops_per_token(config, args.seq_len, weight_gradients=METHODS[name].trains_base)
            mfu = f"{100 * per_token * tokens / peak:.1f}%" if peak else "- (pass --peak-tflops)"
            lines.append(f"| {name} | {tokens:,.0f} | {per_token:,} | {mfu} |")
        lines.append(f"\nLoRA-XS / full step time: {results[LORAXS]['seconds'] / results[FULL]['seconds']:.2f}")
        report.append("\n".join(lines))

    text = "\n\n".join(report) + "\n"
    print("\n" + text)
    if args.out:
        from .files import atomic_write

        with atomic_write(args.out, "w") as file:
            file.write(text)
    return 0


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
