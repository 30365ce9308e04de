"""Fit a probe head from step features to Monte-Carlo labels (torch, CPU is plenty).

- Split by problem, never by step: steps of one solution (and solutions of one problem) are strongly
  correlated, so a step-level split would leak and overstate held-out AUROC.
- Soft labels (the rollout success fraction) with binary cross-entropy by default; ``target="hard"``
  trains on the any-rollout-succeeds label instead.
- A within-problem ranking term (``rank_weight``): BCE alone mostly learns which problems are easy,
  while Best-of-N ranks the candidates of one problem.
- Full-batch AdamW with weight decay, early stopping on the held-out loss; the best epoch's weights
  are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from testtime.errors import ConfigError
from testtime.probe.head import ProbeHead
from testtime.probe.metrics import auroc, brier, grouped_auroc


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
    # Weight of a within-problem ranking term: softplus(s_j - s_i) over step pairs of one problem whose
    # soft labels differ (i better). Plain BCE over many problems mostly learns problem difficulty;
    # Best-of-N needs the ranking of one problem's steps.
    rank_weight: float = 0.0

    def check(self) -> None:
        if self.head not in ("logistic", "mlp"):
            raise ConfigError("head", self.head, "expected logistic or mlp")
        if self.target not in ("soft", "hard"):
            raise ConfigError("target", self.target, "expected soft or hard")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("val_fraction", self.val_fraction, "must be in (0, 1)")
        if self.head == "mlp" and self.hidden < 1:
            raise ConfigError("hidden", self.hidden, "must be >= 1")
        if not self.rank_weight >= 0:  # `not >=`: NaN is refused too
            raise ConfigError("rank_weight", self.rank_weight, "must be >= 0")
        if not 0 < self.lr < float("inf"):
            raise ConfigError("lr", self.lr, "must be a finite number > 0")
        if not self.weight_decay >= 0:
            raise ConfigError("weight_decay", self.weight_decay, "must be >= 0")
        for name in ("epochs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be >= 1")
        if self.seed < 0:
            raise ConfigError("seed", self.seed, "must be >= 0")


def ranked_pairs(soft: np.ndarray, groups: Sequence[str], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (better, worse) among `rows` from the same group whose soft labels differ."""
    by: dict[str, list[int]] = {}
    for i in np.flatnonzero(rows):
        by.setdefault(groups[i], []).append(int(i))
    hi: list[int] = []
    lo: list[int] = []
    for idx in by.values():
        for a in idx:
            for b in idx:
                if soft[a] > soft[b]:
                    hi.append(a)
                    lo.append(b)
    return np.asarray(hi, dtype=np.int64), np.asarray(lo, dtype=np.int64)


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
    # weight positives and negatives equally: labels on a weak policy are mostly 0
    pos = float(ys[tr].mean())
    pos_weight = torch.tensor((1 - pos) / pos if 0 < pos < 1 else 1.0)
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    pairs = {name: tuple(torch.from_numpy(a) for a in ranked_pairs(data.soft, data.groups, mask))
             for name, mask in (("train", tr), ("val", val))}
    index = {"train": torch.from_numpy(np.flatnonzero(tr)), "val": torch.from_numpy(np.flatnonzero(val))}

    def loss_fn(z_all: torch.Tensor, part: str) -> torch.Tensor:
        """BCE on the part's rows plus the ranking term on its pairs (z_all: logits of every row)."""
        loss = bce(z_all[index[part]], ys[index[part]])
        hi, lo = pairs[part]
        if cfg.rank_weight and len(hi):
            loss = loss + cfg.rank_weight * torch.nn.functional.softplus(z_all[lo] - z_all[hi]).mean()
        return loss
    best = (float("inf"), 0, {k: v.clone() for k, v in net.state_dict().items()})
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        opt.zero_grad()
        loss = loss_fn(net(xs)[:, 0], "train")  # full batch: every row's logit, losses over the train part
        loss.backward()
        opt.step()
        net.eval()
        with torch.no_grad():
            vl = float(loss_fn(net(xs)[:, 0], "val"))
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
        "val_loss": best[0], "best_epoch": best[1], "epochs_run": epoch,
        "train_pairs": int(len(pairs["train"][0])), "val_pairs": int(len(pairs["val"][0])),
        "train_auroc_hard": auroc(p[tr], data.hard[tr]), "val_auroc_hard": auroc(p[val], data.hard[val]),
        "val_auroc_within_problem": grouped_auroc(p[val], data.hard[val], [g for g, v in zip(data.groups, val,
                                                                                            strict=True) if v]),
        "val_auroc_soft_gt_half": auroc(p[val], (data.soft[val] > 0.5).astype(int)),
        "val_brier_soft": brier(p[val], data.soft[val]),
        "val_positive_hard": float(data.hard[val].mean()),
    }
    return head, {"config": asdict(cfg), **metrics}
