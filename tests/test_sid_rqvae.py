"""The RQ-VAE Semantic-ID tokenizer: k-means, residual quantisation, losses, collision handling, training."""

from __future__ import annotations

import pytest
import torch

from recbole_diffureason.sid.rqvae import (
    RQVAE,
    append_disambiguation,
    collision_rate,
    kmeans,
    resolve_collisions,
    train_rqvae,
)


def clustered(n: int = 240, dim: int = 16, clusters: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(clusters, dim, generator=generator) * 5
    return centers.repeat_interleave(n // clusters, dim=0) + 0.3 * torch.randn(n, dim, generator=generator)


def test_kmeans_finds_separated_clusters_and_is_deterministic():
    points = clustered()
    centers = kmeans(points, 6, seed=1)
    assign = torch.cdist(points, centers).argmin(dim=1)
    assert all(len(set(assign[i * 40:(i + 1) * 40].tolist())) == 1 for i in range(6))
    assert len(set(assign.tolist())) == 6
    assert torch.equal(kmeans(points, 6, seed=1), centers)
    with pytest.raises(ValueError, match="at least k=300"):
        kmeans(points, 300)


def test_shapes_losses_and_straight_through_gradients():
    model = RQVAE(16, hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=10)
    items = clustered()
    model.quantizer.init_kmeans(model.encoder(items), iterations=10, seed=0)
    codes = model.semantic_ids(items)
    assert codes.shape == (240, 3) and codes.min() >= 0 and codes.max() < 10
    losses = model.losses(items)
    assert set(losses) == {"reconstruction", "quantization"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0  # through the straight-through estimator
    assert model.quantizer.codebooks[0].grad.abs().sum() > 0  # codebook term


def test_kmeans_initialisation_is_deterministic_per_seed():
    items = clustered()
    a, b = (RQVAE(16, (32,), 8, 3, 10) for _ in range(2))
    b.load_state_dict(a.state_dict())
    a.quantizer.init_kmeans(a.encoder(items), 20, seed=4)
    b.quantizer.init_kmeans(b.encoder(items), 20, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.quantizer.codebooks, b.quantizer.codebooks))
    b.quantizer.init_kmeans(b.encoder(items), 20, seed=5)
    assert not torch.equal(a.quantizer.codebooks[0], b.quantizer.codebooks[0])


def test_collisions_move_to_the_nearest_unused_last_level_code_under_the_same_prefix():
    codes = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 4], [0, 0, 0]])
    distances = torch.tensor([[9.0, 9, 9, 0.5, 9, 9], [9, 9, 9, 0.1, 9, 9],  # item 1 is closest to code 3: keeps it
                              [1, 5, 9, 0.9, 0.2, 9], [9, 9, 9, 9, 0, 9], [0, 9, 9, 9, 9, 9]])
    unique = resolve_collisions(codes, distances)
    assert collision_rate(codes) == pytest.approx(2 / 5) and collision_rate(unique) == 0.0
    assert torch.equal(unique[:, :2], codes[:, :2])  # only the last level moves
    assert unique[1, 2] == 3  # the closest member keeps the tuple
    # Duplicates move in order of closeness to their own code: item 0 (0.5) first, to the first of its equally
    # near free codes; then item 2 finds 4 (item 3's) and 0 (item 0's) taken and takes 1.
    assert unique[0, 2] == 0 and unique[2, 2] == 1
    crowded = torch.tensor([[0, 1], [0, 1], [0, 1], [1, 1]])
    with pytest.raises(ValueError, match="more than the codebook holds"):
        resolve_collisions(crowded, torch.zeros(4, 2))
    longer = append_disambiguation(crowded)  # TIGER's fallback: one more level
    assert longer.tolist() == [[0, 1, 0], [0, 1, 1], [0, 1, 2], [1, 1, 0]]


def test_training_gives_unique_sids_and_reports_what_it_did():
    items = torch.randn(300, 16, generator=torch.Generator().manual_seed(2))
    model, codes, report = train_rqvae(items, hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=32,
                                       epochs=15, batch_size=64, kmeans_iterations=20, seed=3)
    assert codes.shape == (300, 3) and torch.unique(codes, dim=0).size(0) == 300
    assert report.collision_rate_after == 0.0 and report.collision_rate_before >= 0.0
    assert len(report.codebook_usage) == 3 and all(0 < u <= 1 for u in report.codebook_usage)
    assert report.reconstruction_loss < float(items.var())  # it learned something
    again = train_rqvae(items, hidden_dims=(32,), latent_dim=8, levels=3, codebook_size=32, epochs=15,
                        batch_size=64, kmeans_iterations=20, seed=3)[1]
    assert torch.equal(again, codes)  # seeded end to end
    assert any("collision rate" in line for line in report.lines())


def test_unit_norm_sentence_like_embeddings_do_not_collapse_onto_one_code():
    # Like MiniLM's outputs: unit vectors with a tiny spread per dimension.
    items = torch.nn.functional.normalize(torch.randn(400, 64, generator=torch.Generator().manual_seed(4)), dim=1)
    _, codes, report = train_rqvae(items, hidden_dims=(32,), latent_dim=8, levels=2, codebook_size=16,
                                   epochs=30, batch_size=64, kmeans_iterations=20, seed=1)
    assert min(report.codebook_usage) > 0.5  # without standardisation every item took one code per level
