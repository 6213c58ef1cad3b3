"""
Where the work runs: the device, the precision of the matrix products, and the processes.

What this file teaches
----------------------
- `pick_device("auto")` takes a CUDA GPU, then Apple's MPS, then the CPU. A device named on the command line
  must exist here: a typo or a missing GPU is one clear error, not a crash halfway through a run.
- `autocast` runs the matrix products in bfloat16 while the weights and the optimizer's state stay in float32:
  about twice the speed on a GPU, with float32's range for the small updates an optimizer makes. train.py turns
  it on for CUDA only; the benchmark can ask for it anywhere (on a CPU it is slow, but it measures bf16).
- `world()` answers "which process am I, and how many are we?" under torchrun: (0, 1) when running alone.
  The first number is the process number, never to be confused with an adapter's rank r. `start_processes`
  joins torchrun's process group.
"""

import contextlib
import os

import torch
import torch.distributed as dist

from .errors import LoraxsError


def pick_device(name):
    """--device: 'auto' takes CUDA, then Apple's MPS, then the CPU; a device that is not there is refused."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise LoraxsError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:1 or mps") from None
        there = {
            "cpu": True,
            "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
            "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        }
        if not there.get(device.type, False):
            raise LoraxsError(f"--device {name}: this PyTorch cannot train there; use --device auto or cpu")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def autocast(device, bf16=None):
    """bfloat16 matrix products, float32 weights; bf16=None: on CUDA only (train.py), True / False: as asked."""
    kind = torch.device(device).type
    if bf16 is None:
        bf16 = kind == "cuda"
    return torch.autocast(kind, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def world():
    """(this process's number, number of processes): (0, 1) unless started by torchrun. Not the adapter rank."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def say(message):
    """Print on the first process only: under torchrun every process runs the same script."""
    if world()[0] == 0:
        print(message, flush=True)


def start_processes(name):
    """
    The device `name` asks for (pick_device); under torchrun, also join the process group (NCCL on CUDA, gloo on
    CPU) and take this process's own GPU.
    """
    device = pick_device(name)
    if "RANK" not in os.environ:
        return device
    cuda = device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def stop_processes():
    """Every process reaches the end before the group is torn down (gloo can abort otherwise)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
