"""Fit a probe head from step features to Monte-Carlo labels (torch, CPU is plenty).

- Split by problem, never by step: steps of one solution (and solutions of one problem) are strongly
  correlated, so a step-level split would leak and overstate held-out AUROC.
- Soft labels (the rollout success fraction) with binary cross-entropy by default; ``target="hard"``
  trains on the any-rollout-succeeds label instead.
- Full-batch AdamW with weight decay, early stopping on the held-out loss; the best epoch's weights
  are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from testtime.probe.head import ProbeHead
from testtime.probe.metrics import auroc, brier


@dataclass(frozen=True)
class TrainConfig:
    head: str = "mlp"  # logistic | mlp
    hidden: int = 32
    target: str = "soft"  # soft | hard
    val_fraction: float = 0.2
    lr: float = 3e-3
    weight_decay: float = 1e-2
    epochs: int = 2000
    patience: int = 100
    seed: int = 0

    def check(self) -> None:
        if self.head not in ("logistic", "mlp"):
            raise ValueError(f"--head {self.head}: expected logistic or mlp")
        if self.target not in ("soft", "hard"):
            raise ValueError(f"--target {self.target}: expected soft or hard")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction {self.val_fraction}: must be in (0, 1)")
        if self.head == "mlp" and self.hidden < 1:
            raise ValueError(f"--hidden {self.hidden}: must be >= 1")


@dataclass
class TrainData:
    x: np.ndarray  # (steps, dim) float32
    soft: np.ndarray  # (steps,) in [0, 1]
    hard: np.ndarray  # (steps,) in {0, 1}
    groups: list[str]  # the problem id of each row (the split unit)


def split_groups(groups: Sequence[str], val_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out rows: whole problems, chosen by a seeded hash of the problem id."""
    def u(g: str) -> float:
        h = hashlib.sha256(f"{seed}\x00{g}".encode()).digest()
        return int.from_bytes(h[:8], "little") / 2**64

    held = {g for g in set(groups) if u(g) < val_fraction}
    return np.array([g in held for g in groups], dtype=bool)


def train_head(data: TrainData, cfg: TrainConfig = TrainConfig()) -> tuple[ProbeHead, dict[str, Any]]:
    """Train on the problems outside the held-out split; returns the head and its metrics."""
    try:
        import torch
    except ImportError:
        raise ImportError("training a probe needs torch: pip install 'testtime[hf]'") from None
    cfg.check()
    val = split_groups(data.groups, cfg.val_fraction, cfg.seed)
    if val.all() or not val.any():
        raise ValueError(f"the labels cover {len(set(data.groups))} problem(s): too few for a held-out split")
    tr = ~val
    y = data.soft if cfg.target == "soft" else data.hard.astype(np.float32)
    mean = data.x[tr].mean(axis=0)
    scale = data.x[tr].std(axis=0) + 1e-6

    torch.manual_seed(cfg.seed)
    dim = data.x.shape[1]
    if cfg.head == "logistic":
        net = torch.nn.Linear(dim, 1)
    else:
        net = torch.nn.Sequential(torch.nn.Linear(dim, cfg.hidden), torch.nn.ReLU(), torch.nn.Linear(cfg.hidden, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    xs = torch.from_numpy(((data.x - mean) / scale).astype(np.float32))
    ys = torch.from_numpy(y.astype(np.float32))
    x_tr, y_tr, x_va, y_va = xs[tr], ys[tr], xs[val], ys[val]
    # weight positives and negatives equally: labels on a weak policy are mostly 0
    pos = float(y_tr.mean())
    pos_weight = torch.tensor((1 - pos) / pos if 0 < pos < 1 else 1.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    best = (float("inf"), 0, {k: v.clone() for k, v in net.state_dict().items()})
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        opt.zero_grad()
        loss = loss_fn(net(x_tr)[:, 0], y_tr)
        loss.backward()
        opt.step()
        net.eval()
        with torch.no_grad():
            vl = float(loss_fn(net(x_va)[:, 0], y_va))
        if vl < best[0] - 1e-6:
            best = (vl, epoch, {k: v.clone() for k, v in net.state_dict().items()})
        elif epoch - best[1] >= cfg.patience:
            break
    net.load_state_dict(best[2])
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    head = ProbeHead(mean.astype(np.float32), scale.astype(np.float32),
                     [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears])
    p = head(data.x)
    metrics = {
        "train_rows": int(tr.sum()), "val_rows": int(val.sum()),
        "train_problems": len({g for g, v in zip(data.groups, val, strict=True) if not v}),
        "val_problems": len({g for g, v in zip(data.groups, val, strict=True) if v}),
        "val_bce_weighted": best[0], "best_epoch": best[1], "epochs_run": epoch,
        "train_auroc_hard": auroc(p[tr], data.hard[tr]), "val_auroc_hard": auroc(p[val], data.hard[val]),
        "val_auroc_soft_gt_half": auroc(p[val], (data.soft[val] > 0.5).astype(int)),
        "val_brier_soft": brier(p[val], data.soft[val]),
        "val_positive_hard": float(data.hard[val].mean()),
    }
    return head, {"config": asdict(cfg), **metrics}
