"""The RQ-VAE Semantic-ID tokenizer (TIGER, LC-Rec; DiffuReason Eq. 15), docs/design.md sections 4.2-4.3.

An MLP encoder maps an item's content embedding ``v`` to ``y``; M codebooks quantise it residually
(``j_m = argmin_k ||rho^m - e_k^m||``, ``rho^{m+1} = rho^m - e_{j_m}^m``); the decoder reconstructs ``v`` from the
straight-through sum of the codes. The loss is ``||v_hat - v||^2 + sum_m (||sg(rho^m) - q^m||^2 + beta
||rho^m - sg(q^m)||^2)`` with the commitment term per level ([R] Eq. 15's parenthesisation) and mean reductions.
Codebooks start from k-means on the whole item set, level by level on the residuals ([R]: at most ~25k items).
``(j_1, ..., j_M)`` is the item's Semantic ID; :func:`resolve_collisions` makes the tuples unique.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to the squared distance."""
    centers = [points[torch.randint(len(points), (1,), generator=generator)]]
    nearest = torch.cdist(points, centers[0]).squeeze(1) ** 2
    for _ in range(k - 1):
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
        chosen = points[torch.multinomial(weights, 1, generator=generator)]
        centers.append(chosen)
        nearest = torch.minimum(nearest, torch.cdist(points, chosen).squeeze(1) ** 2)
    return torch.cat(centers)


def kmeans(points: torch.Tensor, k: int, iterations: int = 100, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means from a k-means++ seeding; empty clusters restart at the worst-fitted points.

    Deterministic for a given ``seed`` (its own generator: the global RNG is left alone).
    """
    generator = torch.Generator().manual_seed(seed)
    points = points.detach().float().cpu()
    if len(points) < k:
        raise ValueError(f"k-means needs at least k={k} points, got {len(points)}.")
    centers = kmeans_plus_plus(points, k, generator)
    for _ in range(iterations):
        assign = torch.cdist(points, centers).argmin(dim=1)
        sums = torch.zeros_like(centers).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k)
        moved = sums / counts.clamp(min=1).unsqueeze(1)
        empty = counts == 0
        if empty.any():
            distance = (points - centers[assign]).pow(2).sum(dim=1)
            moved[empty] = points[distance.topk(int(empty.sum())).indices]
        else:
            moved = torch.where(counts.unsqueeze(1) > 0, moved, centers)
        if torch.allclose(moved, centers):
            break
        centers = moved
    return centers


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them and no activation after the last (no BN, no dropout)."""
    layers: List[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass
class QuantizerOutput:
    codes: torch.Tensor  # [N, M] long
    quantized: torch.Tensor  # [N, e_dim], straight-through sum of the codes
    codebook_loss: torch.Tensor  # sum_m ||sg(rho^m) - q^m||^2 (mean over elements)
    commitment_loss: torch.Tensor  # sum_m ||rho^m - sg(q^m)||^2
    residuals: List[torch.Tensor] = field(default_factory=list)  # rho^m per level


class ResidualQuantizer(nn.Module):
    """M codebooks of K codes of width ``dim``, applied to successive residuals."""

    def __init__(self, levels: int = 4, codebook_size: int = 256, dim: int = 32):
        super().__init__()
        self.levels, self.codebook_size, self.dim = levels, codebook_size, dim
        self.codebooks = nn.ParameterList([nn.Parameter(torch.randn(codebook_size, dim) * 0.01) for _ in range(levels)])

    @torch.no_grad()
    def init_kmeans(self, latents: torch.Tensor, iterations: int = 100, seed: int = 0) -> None:
        """Codebook m := k-means centres of the residuals left after levels 1..m-1 (on the whole item set)."""
        residual = latents.detach()
        for level, book in enumerate(self.codebooks):
            book.copy_(kmeans(residual, self.codebook_size, iterations, seed + level).to(book.device))
            residual = residual - book[torch.cdist(residual, book).argmin(dim=1)]

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        residual = latents
        codes, residuals = [], []
        straight_through = torch.zeros_like(latents)
        codebook_loss = commitment_loss = latents.new_zeros(())
        for book in self.codebooks:
            index = torch.cdist(residual.detach(), book.detach()).argmin(dim=1)
            q = book[index]
            codebook_loss = codebook_loss + F.mse_loss(q, residual.detach())
            commitment_loss = commitment_loss + F.mse_loss(residual, q.detach())
            level = residual + (q - residual).detach()  # straight-through: the value of q, the gradient of rho
            straight_through = straight_through + level
            residuals.append(residual)
            codes.append(index)
            # As LC-Rec: the next residual carries no gradient back through this level's code.
            residual = residual - level
        return QuantizerOutput(torch.stack(codes, dim=1), straight_through, codebook_loss, commitment_loss, residuals)


class RQVAE(nn.Module):
    """Encoder MLP -> residual quantiser -> decoder MLP (the encoder's sizes reversed).

    Args:
        input_dim: width of the content embeddings.
        hidden_dims: encoder hidden widths (TIGER: 512, 256, 128 for 768-d inputs).
        latent_dim: ``e_dim``, the width of the codes (32).
        levels, codebook_size: M (4) and K (256).
        beta: commitment weight (0.25).
    """

    def __init__(self, input_dim: int, hidden_dims: Sequence[int] = (512, 256, 128), latent_dim: int = 32,
                 levels: int = 4, codebook_size: int = 256, beta: float = 0.25):
        super().__init__()
        sizes = [input_dim, *hidden_dims, latent_dim]
        self.encoder, self.decoder = mlp(sizes), mlp(sizes[::-1])
        self.quantizer = ResidualQuantizer(levels, codebook_size, latent_dim)
        self.beta = beta

    def forward(self, items: torch.Tensor) -> Tuple[torch.Tensor, QuantizerOutput]:
        out = self.quantizer(self.encoder(items))
        return self.decoder(out.quantized), out

    def losses(self, items: torch.Tensor) -> Dict[str, torch.Tensor]:
        reconstruction, out = self(items)
        return {
            "reconstruction": F.mse_loss(reconstruction, items),
            "quantization": out.codebook_loss + self.beta * out.commitment_loss,
        }

    @torch.no_grad()
    def semantic_ids(self, items: torch.Tensor) -> torch.Tensor:
        """``[N, M]`` argmin codes at every level (no Sinkhorn at extraction)."""
        return self.quantizer(self.encoder(items)).codes

    @torch.no_grad()
    def last_level_distances(self, items: torch.Tensor) -> torch.Tensor:
        """``[N, K]`` distance of each item's last residual to every last-level code (for collision handling)."""
        out = self.quantizer(self.encoder(items))
        return torch.cdist(out.residuals[-1], self.quantizer.codebooks[-1])


@dataclass
class TokenizerReport:
    reconstruction_loss: float
    quantization_loss: float
    codebook_usage: List[float]  # share of the K codes used, per level
    collision_rate_before: float
    collision_rate_after: float
    epochs: int

    def lines(self) -> List[str]:
        usage = ", ".join(f"level {i + 1}: {u:.1%}" for i, u in enumerate(self.codebook_usage))
        return [f"reconstruction loss {self.reconstruction_loss:.5f}, quantization loss {self.quantization_loss:.5f} "
                f"after {self.epochs} epochs", f"codebook usage: {usage}",
                f"collision rate: {self.collision_rate_before:.2%} before, {self.collision_rate_after:.2%} after "
                "collision handling"]


def collision_rate(codes: torch.Tensor) -> float:
    """Share of items whose tuple is also another item's: ``1 - distinct tuples / items``."""
    return 1.0 - torch.unique(codes, dim=0).size(0) / max(codes.size(0), 1)


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> List[float]:
    return [torch.unique(codes[:, level]).numel() / codebook_size for level in range(codes.size(1))]


def resolve_collisions(codes: torch.Tensor, last_distances: torch.Tensor) -> torch.Tensor:
    """Unique tuples of the same length ([R] docs/design.md 4.3 (c)): in each group of items sharing a tuple, the
    item closest to its last-level code keeps it; every other one moves to the nearest last-level code not used by
    any item under the same 3-prefix. Raises if a prefix has more items than codes (then no 4-level answer exists).
    """
    codes = codes.clone()
    prefix_width = codes.size(1) - 1
    used: Dict[Tuple[int, ...], set] = {}
    for row in codes.tolist():
        used.setdefault(tuple(row[:prefix_width]), set()).add(row[-1])
    order = torch.argsort(last_distances.gather(1, codes[:, -1:]).squeeze(1), stable=True)
    seen: set = set()
    for item in order.tolist():
        key = tuple(codes[item].tolist())
        if key not in seen:
            seen.add(key)
            continue
        prefix = key[:prefix_width]
        for code in torch.argsort(last_distances[item], stable=True).tolist():
            if code not in used[prefix]:
                used[prefix].add(code)
                codes[item, -1] = code
                seen.add(prefix + (code,))
                break
        else:
            raise ValueError(f"{len(used[prefix])} items share the prefix {prefix}: more than the codebook holds.")
    return codes


def append_disambiguation(codes: torch.Tensor) -> torch.Tensor:
    """TIGER's fallback ([R] docs/design.md 4.3 (a)): one more level numbering the items inside each group that
    shares a tuple (0 for an item alone), so every SID is one code longer."""
    _, group = torch.unique(codes, dim=0, return_inverse=True)
    order = torch.argsort(group, stable=True)
    ranks = torch.empty_like(group)
    sorted_groups = group[order]
    starts = torch.ones_like(sorted_groups, dtype=torch.bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    first = torch.cummax(torch.where(starts, torch.arange(len(order)), torch.zeros_like(order)), dim=0).values
    ranks[order] = torch.arange(len(order)) - first
    return torch.cat([codes, ranks.unsqueeze(1)], dim=1)


def unique_semantic_ids(codes: torch.Tensor, last_distances: torch.Tensor) -> torch.Tensor:
    """:func:`resolve_collisions`, or, where a prefix holds more items than codes, :func:`append_disambiguation`."""
    try:
        return resolve_collisions(codes, last_distances)
    except ValueError:
        return append_disambiguation(codes)


def train_rqvae(
    items: torch.Tensor,
    hidden_dims: Sequence[int] = (512, 256, 128),
    latent_dim: int = 32,
    levels: int = 4,
    codebook_size: int = 256,
    beta: float = 0.25,
    epochs: int = 200,
    batch_size: int = 1024,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    kmeans_iterations: int = 100,
    seed: int = 2020,
    device: Optional[torch.device] = None,
    standardize: bool = True,
) -> Tuple[RQVAE, torch.Tensor, TokenizerReport]:
    """Train an RQ-VAE on the content embeddings ``items [N, d]`` and return it, the unique SIDs ``[N, M]`` (``M + 1``
    codes where the greedy resolution could not keep M) and a report (reconstruction and quantization losses,
    codebook usage per level, collision rate before and after). ``standardize`` z-scores every input dimension
    over the items first (the reconstruction loss is then on that scale)."""
    device = device or torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    data = items.float().to(device)
    if standardize:
        # Sentence embeddings are unit vectors with tiny per-dimension spread: the reconstruction error of a
        # constant output is then ~1/d, below the quantisation loss, and training collapses every item onto one
        # code per level. Per-dimension standardisation puts the reconstruction on a unit scale ([R] 4.2).
        data = (data - data.mean(dim=0)) / data.std(dim=0).clamp(min=1e-8)
    with torch.random.fork_rng(devices=[]):  # a seeded model without touching the caller's RNG
        torch.manual_seed(seed)
        model = RQVAE(data.size(1), hidden_dims, latent_dim, levels, codebook_size, beta).to(device)
    with torch.no_grad():
        model.quantizer.init_kmeans(model.encoder(data), kmeans_iterations, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    for _ in range(epochs):
        for batch in torch.randperm(len(data), generator=generator).split(batch_size):
            losses = model.losses(data[batch.to(device)])
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        final = {k: float(v) for k, v in model.losses(data).items()}
        codes = model.semantic_ids(data).cpu()
        unique = unique_semantic_ids(codes, model.last_level_distances(data).cpu())
    report = TokenizerReport(final["reconstruction"], final["quantization"], codebook_usage(codes, codebook_size),
                             collision_rate(codes), collision_rate(unique), epochs)
    return model, unique, report
