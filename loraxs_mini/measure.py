"""
Peak memory, measured the same way by train.py and the benchmark; and how
sizes and times are written for people (human_bytes, human_seconds).

On CUDA: the most the PyTorch allocator held on the device. On the CPU: the
process's peak resident memory. On Linux that is read from /proc/self/status
(VmHWM), which belongs to this program alone; `ru_maxrss` would also carry the
peak of the process that launched it, since it survives fork and exec.
"""

import platform
import resource

import torch


def peak_memory_bytes(device="cpu"):
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass  # not Linux
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024  # bytes on macOS, kilobytes elsewhere


def human_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def human_seconds(seconds):
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"
