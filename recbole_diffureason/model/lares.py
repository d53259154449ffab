r"""
LARES
#####

Reference:
    "Latent Reasoning with Recurrent Depth for Sequential Recommendation" (LARES). Design decisions:
    docs/design.md section 2 (details of RecBole3.0's reimplementation where the paper is silent; no official
    code is public).

Model (Eqs. 5-7)::

    X   = Dropout(LN(E[seq] + P[pos]))                  RecBole's SASRec input
    H   = A(X)                                          pre-block (pre_layers; 0 = "w/o pre-block": H = X)
    T_0 ~ N(0, (init_std * state_scale)^2)              [B, L, d], fresh in training, seeded or zero in evaluation
    T_i = C(LN(f(T_{i-1}, H)))   i = 1..k               core-block, k ~ log-normal Poisson (Eq. 6) per batch
    p   = T_k[len - 1];  scores = p E^T                 L_Rec = CE (Eq. 7); evaluation at depth k_bar + 1

Training runs two stages (``training_stages``; ``DRTrainer`` switches, reloading the best SPT checkpoint and
rebuilding the optimiser with ``rpt_learning_rate``):

* **SPT** (Eq. 10): ``L_Rec + tla_weight * L_TLA + sla_weight * L_SLA``. TLA aligns ``p`` with ``p_hat`` from a
  second pass at the *same* depth over a positive view: another training sequence with the same target
  (precomputed ``target -> rows`` index, as RecBole's FEARec builds it) or, if there is none, the same
  sequence with new dropout masks and a new ``T_0``. SLA aligns ``t_b`` with ``t_k``, ``b ~ U{1..k-1}``.
* **RPT** (Eqs. 11-12): GRPO with G rollouts of the model in train mode (own ``T_0``, dropout and depth), the
  target-only policy ``log pi = mean_j log p(target | t_{i,j})``, a Recall@K / NDCG@K reward of the last step,
  z-scored group advantages, the clipped ratio and a k3 KL to the frozen SPT model run on the same input with
  the same ``T_0`` and depth. No CE. Before RPT, ``LARESTrainer`` drops the training samples whose target the
  SPT model ranks outside the top 100 in all three trials (``rpt_filter``).

``ablation`` sets the keys of one Table 2 row; ``train_stage`` runs one stage alone (``rpt`` starts from the
SPT checkpoint in ``pre_model_path``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_diffureason import checkpoint
from recbole_diffureason.keys import SASREC_KEYS, Bool, Choice, ConfigError, Float, Int, Key, check_heads_divide_width
from recbole_diffureason.model.abstract import ReasoningRecommender
from recbole_diffureason.modules.encoders import add_sasrec_input_layers, embed_like_sasrec
from recbole_diffureason.modules.grpo import (
    REWARDS,
    capped_rank_from_scores,
    clipped_surrogate_loss,
    group_advantages,
    group_statistics,
    k3_kl,
    rewards_from_rank,
    target_log_prob,
)
from recbole_diffureason.modules.objectives import SIMILARITIES, symmetric_info_nce
from recbole_diffureason.modules.recurrent_depth import AGGREGATIONS, LAYER_TYPES, DepthRecurrentEncoder, sample_depth

# Table 2 rows -> the keys they fix.
ABLATIONS: Dict[str, Dict[str, object]] = {
    "wo_rpt": {"train_stage": "spt"},
    "wo_rpt_pre_block": {"train_stage": "spt", "pre_layers": 0},
    "wo_rpt_sampling": {"train_stage": "spt", "depth_sampling": False},
    "wo_rpt_sla": {"train_stage": "spt", "sla_weight": 0.0},
    "wo_rpt_sla_tla": {"train_stage": "spt", "sla_weight": 0.0, "tla_weight": 0.0},
}
TRAIN_STAGES = ("both", "spt", "rpt")
RPT_FILTERS = ("all", "any", "none")
TRUNCATION = 3.0  # RecBole3.0's truncated-normal T_0 is cut at +-3 std


class LARES(ReasoningRecommender):
    """LARES: depth-recurrent latent reasoning, SPT (TLA + SLA) then RPT (GRPO)."""

    presets = {"ablation": ABLATIONS}
    loss_names = ("rec", "tla", "sla", "policy", "kl")
    config_keys: Dict[str, Key] = {
        **SASREC_KEYS,
        "ablation": Choice(choices=tuple(ABLATIONS), optional=True),
        "pre_layers": Int(min=0),
        "core_layers": Int(min=1),
        "aggregation": Choice(choices=AGGREGATIONS),
        "layer_type": Choice(choices=LAYER_TYPES),
        "mean_depth": Int(min=1),
        "depth_sampling": Bool(),
        "depth_sigma": Float(min=0.0),
        "depth_cap_factor": Int(min=1),
        "eval_depth": Int(min=1, optional=True),
        "init_std": Float(min=0.0),
        "state_scale": Float(min=0.0),
        "init_distribution": Choice(choices=("normal", "trunc_normal")),
        "eval_init": Choice(choices=("seeded", "zero")),
        "eval_noise_seed": Int(min=0),
        "tla_weight": Float(min=0.0),
        "sla_weight": Float(min=0.0),
        "cl_similarity": Choice(choices=SIMILARITIES),
        "cl_temperature": Float(min=0.0, min_inclusive=False),
        "same_target_positive": Bool(),
        "mask_false_negatives": Bool(),
        "train_stage": Choice(choices=TRAIN_STAGES),
        "spt_epochs": Int(min=1, optional=True),
        "rpt_epochs": Int(min=1, optional=True),
        "pre_model_path": Key(optional=True),
        "spt_learning_rate": Float(min=0.0, min_inclusive=False, optional=True),
        "rpt_learning_rate": Float(min=0.0, min_inclusive=False, optional=True),
        "group_size": Int(min=2),
        "rollout_depth": Choice(choices=("sampled", "fixed")),
        "reward": Choice(choices=REWARDS),
        "reward_k": Int(min=1),
        "policy_step_reduction": Choice(choices=("mean", "sum")),
        "clip_eps": Float(min=0.0),
        "adv_eps": Float(min=0.0, min_inclusive=False),
        "kl_beta": Float(min=0.0),
        "rpt_filter": Choice(choices=RPT_FILTERS),
        "rpt_filter_topk": Int(min=1),
        "rpt_filter_trials": Int(min=1),
    }

    @classmethod
    def check_config(cls, config: dict) -> None:
        check_heads_divide_width(config)
        if config["layer_type"] == "pre_ln" and config["hidden_act"] not in ("gelu", "relu"):
            raise ConfigError(f"layer_type 'pre_ln' (torch's TransformerEncoderLayer) supports hidden_act 'gelu' or "
                              f"'relu', got {config['hidden_act']!r}.")
        if config["train_stage"] == "rpt" and not config["pre_model_path"]:
            raise ConfigError("train_stage 'rpt' starts from an SPT checkpoint: set 'pre_model_path' to the .pth file "
                              "of a train_stage='spt' run.")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        hidden = config["hidden_size"]
        self.hidden_size = hidden
        add_sasrec_input_layers(self, self.n_items, self.max_seq_length, hidden, config["layer_norm_eps"],
                                config["hidden_dropout_prob"])
        self.encoder = DepthRecurrentEncoder(
            hidden, n_heads=config["n_heads"], inner_size=config["inner_size"],
            hidden_dropout=config["hidden_dropout_prob"], attn_dropout=config["attn_dropout_prob"],
            hidden_act=config["hidden_act"], layer_norm_eps=config["layer_norm_eps"],
            pre_layers=config["pre_layers"], core_layers=config["core_layers"],
            aggregation=config["aggregation"], layer_type=config["layer_type"],
        )
        self.apply(self.init_like_sasrec)
        self._read_depth_config(config)
        self._read_spt_config(config)
        self._read_rpt_config(config)
        if self.same_target_positive:
            self._index_same_targets(dataset)
        self.train_stage = config["train_stage"]
        self.stage = self.training_stages()[0][0]
        if self.train_stage == "rpt":
            self.load_pretrained(config["pre_model_path"])

    def _read_depth_config(self, config) -> None:
        self.mean_depth = config["mean_depth"]
        self.depth_sampling = config["depth_sampling"]
        self.depth_sigma = float(config["depth_sigma"])
        self.depth_cap = config["depth_cap_factor"] * self.mean_depth
        self.eval_depth = config["eval_depth"] or self.mean_depth + 1
        self.init_scale = float(config["init_std"]) * float(config["state_scale"])
        self.init_distribution = config["init_distribution"]
        self.eval_init = config["eval_init"]
        self.eval_noise_seed = config["eval_noise_seed"]

    def _read_spt_config(self, config) -> None:
        self.tla_weight, self.sla_weight = float(config["tla_weight"]), float(config["sla_weight"])
        self.cl_options = dict(temperature=float(config["cl_temperature"]), similarity=config["cl_similarity"])
        self.same_target_positive = config["same_target_positive"]
        self.mask_false_negatives = config["mask_false_negatives"]

    def _read_rpt_config(self, config) -> None:
        self.spt_epochs = config["spt_epochs"] or config["epochs"]
        self.rpt_epochs = config["rpt_epochs"] or config["epochs"]
        self.stage_learning_rates = {"spt": config["spt_learning_rate"], "rpt": config["rpt_learning_rate"]}
        self.group_size = config["group_size"]
        self.rollout_depth_mode = config["rollout_depth"]
        self.reward, self.reward_k = config["reward"], config["reward_k"]
        self.policy_step_reduction = config["policy_step_reduction"]
        self.clip_eps, self.adv_eps = float(config["clip_eps"]), float(config["adv_eps"])
        self.kl_beta = float(config["kl_beta"])
        self.rpt_filter = config["rpt_filter"]
        self.rpt_filter_topk, self.rpt_filter_trials = config["rpt_filter_topk"], config["rpt_filter_trials"]

    def _index_same_targets(self, dataset) -> None:
        """``target -> training rows`` as sorted rows plus per-target start and count (FEARec's map, vectorised)."""
        feat = dataset.inter_feat
        targets = feat[self.ITEM_ID].long()
        counts = torch.bincount(targets, minlength=self.n_items)
        self.register_buffer("train_item_seq", feat[self.ITEM_SEQ].long(), persistent=False)
        self.register_buffer("train_item_len", feat[self.ITEM_SEQ_LEN].long(), persistent=False)
        self.register_buffer("rows_by_target", torch.argsort(targets, stable=True), persistent=False)
        self.register_buffer("target_counts", counts, persistent=False)
        self.register_buffer("target_starts", torch.cumsum(counts, dim=0) - counts, persistent=False)

    def load_pretrained(self, path: str) -> None:
        """Load the weights of an SPT checkpoint written by this plugin (``weights_only=True``)."""
        state = checkpoint.load(path, map_location="cpu")
        if str(state.get("model_class", "LARES")).lower() != "lares":
            raise ConfigError(f"pre_model_path '{path}' holds a {state.get('model_class')} checkpoint, not LARES.")
        self.load_state_dict(state["state_dict"])

    # ------------------------------------------------------------------ depth and initial state
    def train_depth(self) -> int:
        """One depth per batch (Eq. 6); "w/o sampling" trains at the inference depth."""
        if not self.depth_sampling:
            return self.eval_depth
        return sample_depth(self.mean_depth, self.depth_sigma, self.depth_cap)

    def random_state(self, shape: Tuple[int, ...], generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A fresh ``T_0``: N(0, 1) or its +-3-std truncation, times ``init_std * state_scale``."""
        if self.init_distribution == "trunc_normal":
            state = nn.init.trunc_normal_(torch.empty(shape), a=-TRUNCATION, b=TRUNCATION, generator=generator)
        else:
            state = torch.randn(shape, generator=generator)
        return state.to(self.device) * self.init_scale

    def eval_state(self, interaction, shape: Tuple[int, ...]) -> torch.Tensor:
        """Evaluation ``T_0``: zero, or keyed by user id so that metrics do not depend on batching."""
        if self.eval_init == "zero" or self.init_scale == 0:
            return torch.zeros(shape, device=self.device)
        batch, length, hidden = shape
        state = self.keyed_noise(interaction, length * hidden, self.eval_noise_seed).view(shape).to(self.device)
        if self.init_distribution == "trunc_normal":
            state = state.clamp(-TRUNCATION, TRUNCATION)
        return state * self.init_scale

    # ------------------------------------------------------------------ forward
    def forward(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, depth: int, init_state: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Thoughts ``t_1..t_depth`` at the last position, ``[B, depth, d]``; ``init_state``: a fresh draw if None."""
        x = embed_like_sasrec(self, item_seq)
        if init_state is None:
            init_state = self.random_state(tuple(x.shape))
        return self.encoder(x, self.get_attention_mask(item_seq), item_seq == 0, init_state, depth, item_seq_len - 1)

    def scores(self, thoughts: torch.Tensor) -> torch.Tensor:
        return torch.matmul(thoughts, self.item_embedding.weight.t())

    # ------------------------------------------------------------------ SPT
    def calculate_loss(self, interaction) -> Tuple[torch.Tensor, ...]:
        if self.stage == "rpt":
            return self.rpt_loss(interaction)
        return self.spt_loss(interaction)

    def spt_loss(self, interaction) -> Tuple[torch.Tensor, ...]:
        """``L_Rec + alpha L_TLA + gamma L_SLA`` (Eq. 10), two passes at one sampled depth."""
        seq, length, target = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction[self.POS_ITEM_ID]
        depth = self.train_depth()
        thoughts = self.forward(seq, length, depth)
        rec = F.cross_entropy(self.scores(thoughts[:, -1]), target)
        zero = rec.new_zeros(())
        tla = sla = zero
        if self.tla_weight > 0:
            positive_seq, positive_len = self.positive_view(seq, length, target)
            positive = self.forward(positive_seq, positive_len, depth)[:, -1]
            same = target[:, None] == target[None, :] if self.mask_false_negatives else None
            tla = self.tla_weight * symmetric_info_nce(
                thoughts[:, -1], positive, false_negatives=same, **self.cl_options
            )
        if self.sla_weight > 0 and depth > 1:
            step = int(torch.randint(1, depth, ()))  # b ~ U{1..k-1}
            sla = self.sla_weight * symmetric_info_nce(thoughts[:, step - 1], thoughts[:, -1], **self.cl_options)
        self.record_diagnostics(depth=depth)
        return rec, tla, sla, zero, zero

    def positive_view(self, seq: torch.Tensor, length: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Another training sequence with the same target, drawn uniformly, else the sequence itself.

        A first draw covers all rows with the target; a draw that hits the anchor itself (same history) is
        moved to one of the other rows, which keeps the choice uniform over the others.
        """
        if not self.same_target_positive:
            return seq, length
        counts, starts = self.target_counts[target], self.target_starts[target]
        draw = (torch.rand(len(target), device=seq.device) * counts).long()
        rows = self.rows_by_target[starts + draw]
        is_self = (self.train_item_len[rows] == length) & (self.train_item_seq[rows] == seq).all(dim=-1)
        others = (counts - 1).clamp(min=1)
        redraw = (draw + 1 + (torch.rand(len(target), device=seq.device) * others).long()) % counts.clamp(min=1)
        rows = torch.where(is_self & (counts > 1), self.rows_by_target[starts + redraw], rows)
        self.record_diagnostics(same_target_share=float((counts > 1).float().mean()))
        return self.train_item_seq[rows], self.train_item_len[rows]

    # ------------------------------------------------------------------ RPT
    def rollout_depth(self) -> int:
        """Each rollout samples its own depth (RecBole3.0), or all use the inference depth (``fixed``)."""
        return self.train_depth() if self.rollout_depth_mode == "sampled" else self.eval_depth

    def rpt_loss(self, interaction) -> Tuple[torch.Tensor, ...]:
        """GRPO with the target-only policy (Eqs. 11-12, docs/design.md section 2.4); no recommendation CE."""
        seq, length, target = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], interaction[self.POS_ITEM_ID]
        if not self.has_reference:
            self.snapshot_reference()
        log_probs, ref_log_probs, rewards, depths = [], [], [], []
        for _ in range(self.group_size):
            depth = self.rollout_depth()
            init = self.random_state((seq.size(0), seq.size(1), self.hidden_size))
            scores = self.scores(self.forward(seq, length, depth, init_state=init))  # [B, k, N]
            log_probs.append(target_log_prob(scores, target))
            ranks = capped_rank_from_scores(scores[:, -1].detach(), target, self.reward_k)
            rewards.append(rewards_from_rank(ranks, self.reward, self.reward_k))
            ref_log_probs.append(self.reference_log_prob(seq, length, depth, init, target))
            depths.append(depth)
        policy, kl, stats = self.group_policy_loss(log_probs, ref_log_probs, torch.stack(rewards, dim=1), depths)
        self.record_diagnostics(**stats, depth=sum(depths) / len(depths))
        zero = policy.new_zeros(())
        return zero, zero, zero, policy, kl

    def group_policy_loss(
        self, log_probs: List[torch.Tensor], ref_log_probs: List[torch.Tensor], rewards: torch.Tensor, depths: List[int]
    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, float]]:
        """``-mean_b 1/G sum_i w_i sum_j [min(rho_ij A_i, clip(rho_ij) A_i) - beta KL_ij]``.

        ``w_i = 1/k_i`` (per-step mean, [R]) or 1 (the paper's product of step probabilities). Rollouts have
        different depths, so steps are padded to ``K = max k_i`` with zero weight; the mean of the clipped
        surrogate over ``[B, G, K]`` times K is then the sum over each rollout's steps, averaged over b and i.
        """
        longest = max(depths)
        pad = [(0, longest - lp.size(1)) for lp in log_probs]
        log_prob = torch.stack([F.pad(lp, p) for lp, p in zip(log_probs, pad)], dim=1)  # [B, G, K]
        ref_log_prob = torch.stack([F.pad(lp, p) for lp, p in zip(ref_log_probs, pad)], dim=1)
        steps = torch.arange(longest, device=log_prob.device)
        depth = torch.tensor(depths, device=log_prob.device)
        weights = (steps[None, :] < depth[:, None]).float()  # [G, K]
        if self.policy_step_reduction == "mean":
            weights = weights / depth[:, None].float()
        advantages = group_advantages(rewards, self.adv_eps)  # [B, G]
        # pi_old is this rollout itself: rho = 1 in value and the gradient is A * grad log pi.
        policy = clipped_surrogate_loss(log_prob, log_prob.detach(), advantages[..., None] * weights, self.clip_eps)
        policy = policy * longest
        kl = self.kl_beta * (weights * k3_kl(log_prob, ref_log_prob)).sum(dim=-1).mean()
        return policy, kl, group_statistics(advantages, rewards)

    # ------------------------------------------------------------------ frozen SPT model
    @torch.no_grad()
    def reference_thoughts(
        self, seq: torch.Tensor, length: torch.Tensor, depth: int, init: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Thoughts and item table of ``pi_ref`` (the current weights if none is frozen), without dropout."""
        if not self.has_reference:
            with self.evaluating():
                return self.forward(seq, length, depth, init_state=init), self.item_embedding.weight
        thoughts = self.reference_call(seq, length, depth, init_state=init)
        return thoughts, self.reference_weight("item_embedding.weight")

    def reference_log_prob(
        self, seq: torch.Tensor, length: torch.Tensor, depth: int, init: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        thoughts, table = self.reference_thoughts(seq, length, depth, init)
        return target_log_prob(torch.matmul(thoughts, table.t()), target)

    @torch.no_grad()
    def rpt_sample_mask(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, target: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Data selection (section 2.4): True for the samples RPT trains on.

        The SPT model scores each sample ``rpt_filter_trials`` times at the inference depth with fresh ``T_0``
        draws; ``all`` drops a sample whose target is outside the top ``rpt_filter_topk`` in every trial (the
        paper), ``any`` drops it if that happens in any trial.
        """
        if self.rpt_filter == "none":
            return torch.ones_like(target, dtype=torch.bool)
        hits = []
        for _ in range(self.rpt_filter_trials):
            init = self.random_state((item_seq.size(0), item_seq.size(1), self.hidden_size), generator)
            thoughts, table = self.reference_thoughts(item_seq, item_seq_len, self.eval_depth, init)
            ranks = capped_rank_from_scores(thoughts[:, -1] @ table.t(), target, self.rpt_filter_topk)
            hits.append(ranks < self.rpt_filter_topk)
        hits = torch.stack(hits)
        return hits.any(dim=0) if self.rpt_filter == "all" else hits.all(dim=0)

    # ------------------------------------------------------------------ stages
    def training_stages(self) -> List[Tuple[str, int]]:
        stages = {"spt": ("spt", self.spt_epochs), "rpt": ("rpt", self.rpt_epochs)}
        names = ("spt", "rpt") if self.train_stage == "both" else (self.train_stage,)
        return [stages[name] for name in names]

    def stage_learning_rate(self, stage: str) -> Optional[float]:
        return self.stage_learning_rates.get(stage)

    def set_training_stage(self, name: str, resumed: bool = False) -> None:
        """Entering RPT freezes the SPT weights as the KL reference (a resumed run brings its own)."""
        self.stage = name
        if name == "rpt" and not self.has_reference:
            self.snapshot_reference()

    # ------------------------------------------------------------------ RecBole prediction API
    def user_vector(self, interaction) -> torch.Tensor:
        seq, length = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        init = self.eval_state(interaction, (seq.size(0), seq.size(1), self.hidden_size))
        return self.forward(seq, length, self.eval_depth, init_state=init)[:, -1]

    def predict(self, interaction) -> torch.Tensor:
        return (self.user_vector(interaction) * self.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.scores(self.user_vector(interaction))

