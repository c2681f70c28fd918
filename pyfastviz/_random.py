"""Seeded random generators that leave torch's global RNG alone."""

import numbers

import torch


def check_seed(seed) -> int | None:
    """seed as None or a Python int (numpy ints too) in torch's range [-2^63, 2^64); a
    TypeError/ValueError naming it otherwise."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be None or an int, got {type(seed).__name__}")
    if not -2**63 <= int(seed) < 2**64:
        raise ValueError(f"seed must be an int in [-2^63, 2^64), got {seed}")
    return int(seed)


def seeded_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on device seeded with seed (see check_seed); seed=None draws the seed from
    torch's global RNG, so the run follows torch.manual_seed and the global RNG advances by one
    draw (it is never reseeded, as torch.seed() would)."""
    seed = check_seed(seed)
    if seed is None:
        seed = int(torch.randint(2**62, (), dtype=torch.int64))
    return torch.Generator(device=device).manual_seed(seed)
