"""Temperature scaling: one scalar per task, fitted on dev logits, that makes the
softmax probabilities honest (a 0.8 score is right about 80% of the time).

    >>> t = fit_temperature(np.array([[4.0, 0.0], [4.0, 0.0]]), np.array([0, 1]))
    >>> t > 1  # over-confident logits get softened
    True
"""

from __future__ import annotations

import numpy as np
import torch

MIN_T, MAX_T = 0.05, 20.0


def fit_temperature(logits: np.ndarray, gold: np.ndarray, steps: int = 200) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on ``gold``."""
    if len(gold) == 0:
        return 1.0
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(gold), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # optimise log T: T stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp())
    return float(np.clip(t, MIN_T, MAX_T)) if np.isfinite(t) else 1.0
