"""Seeded random generators that leave torch's global RNG alone."""

import torch


def seeded_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on device seeded with seed; seed=None draws the seed from torch's global RNG,
    so the run follows torch.manual_seed and the global RNG advances by one draw (it is never
    reseeded, as torch.seed() would)."""
    if seed is None:
        seed = int(torch.randint(2**62, (), dtype=torch.int64))
    return torch.Generator(device=device).manual_seed(seed)
