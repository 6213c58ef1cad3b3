"""Reference solutions for lesson 08. Try lessons/exercises/ex08_tinylora_and_export.py first!"""

import torch


def tinylora_R(v, P):
    return torch.einsum("i,ijk->jk", v, P)


def loraxs_as_lora(A, B, R, scaling):
    return A, scaling * B @ R  # R and the scale go into B'; A stays as it is


def tinylora_fit_error(target, u, seed):
    r = target.shape[0]
    generator = torch.Generator().manual_seed(seed)
    P = torch.normal(0.0, 1 / r**0.5, size=(u, r, r), generator=generator)
    columns = P.reshape(u, r * r).T  # (r², u): each P_i flattened is one column
    v = torch.linalg.lstsq(columns, target.reshape(r * r, 1)).solution  # (u, 1)
    # The P_i span at most u of the r² directions: the error reaches zero at u = r², not before.
    return ((columns @ v).flatten() - target.flatten()).norm().item() / target.norm().item()
