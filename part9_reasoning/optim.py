"""2.4 The optimizer and gradient clipping, written out.

torch has both (torch.optim.AdamW, torch.nn.utils.clip_grad_norm_); the course writes them here so a
training step is code you can read. tests/test_scratch_ops.py checks them against torch's to 1e-6.

AdamW subclasses torch.optim.Optimizer, which brings param groups (a learning rate or weight decay per
group), zero_grad(), state_dict() and load_state_dict(). The state uses torch's names ('step',
'exp_avg', 'exp_avg_sq'), so a state dict saved by one AdamW loads into the other.
"""
import math

import torch


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019). For each parameter p with gradient g:
        p   <- p * (1 - lr * weight_decay)           decay the weight itself, not through the gradient
        m   <- beta1 * m + (1 - beta1) * g           running mean of the gradient (momentum)
        v   <- beta2 * v + (1 - beta2) * g^2         running mean of its square (per-weight scale)
        p   <- p - lr * m_hat / (sqrt(v_hat) + eps)  with m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)
    m and v start at 0, so early on they are too small; dividing by (1 - beta^t) undoes that bias."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"AdamW needs lr, eps, weight_decay >= 0 and betas in [0, 1); got lr={lr}, "
                             f"betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # the Optimizer interface: a function that recomputes the loss
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if not state:  # first step: the moments start at zero
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                t = state["step"].item()
                p.mul_(1 - lr * weight_decay)
                m.lerp_(g, 1 - beta1)                                  # m + (1 - beta1) * (g - m)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                # the update above, in the order torch computes it (so the two agree to the last bit on CPU):
                # lr * m_hat / (sqrt(v_hat) + eps) = (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
                denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))
        return loss


@torch.no_grad()
def clip_grad_norm(parameters, max_norm):
    """Scale all gradients down together so that their total norm is at most max_norm; return the norm
    before clipping (a tensor, like torch.nn.utils.clip_grad_norm_). The total norm is the length of
    every gradient laid end to end as one vector: sqrt(sum of the squared norms of the tensors)."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    # min(1, max_norm / total) as a tensor: an `if total > max_norm` would make a GPU wait for the value
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.device))
    return total
