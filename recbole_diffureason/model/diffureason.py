r"""
DiffuReason base: Think-then-Diffuse over any sequential backbone
##################################################################

Reference:
    "DiffuReason: Bridging Latent Reasoning and Generative Refinement for Sequential Recommendation"; its
    approach is called "Think-then-Diffuse". Every ambiguity of the paper and how it is resolved: docs/design.md
    section 5.

Data flow (Alg. 1)::

    H, h_L   = Backbone(S_u)                                  backbone states
    tau_1..R = ThinkingTokens(H, h_L)                         Eq. 1, tau_1 = h_L
    c        = psi(tau_1..tau_R)                              Eq. 2
    x^T      = tau_R + eps_init                               Eq. 3 (warm start)
    (mu, sigma) = reverse chain t = T..1 of Den(x^t, t, c)    Eqs. 4-6
    L = L_rec(mu) + alpha * MSE(mu, v_target) + beta * L_align(z_1..z_G ~ N(mu, sigma))   Eqs. 7-13

Subclasses supply the backbone and the decoder: :meth:`encode`, :meth:`score_all`, :meth:`target_vector`
and :meth:`action_rewards`. Every [R] resolution (docs/design.md) and every Table 3 ablation is a config key;
``ablation`` sets the keys of one Table 3 row at once.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_diffureason.keys import Bool, Choice, ConfigError, Float, Int, Key
from recbole_diffureason.model.abstract import ReasoningRecommender
from recbole_diffureason.modules.grpo import (
    ALIGN_GRADIENTS,
    RANK_METHODS,
    REWARDS,
    diag_gaussian_kl,
    gaussian_policy_loss,
    sample_actions,
)
from recbole_diffureason.modules.refiner import (
    DENOISER_OUTPUTS,
    SCHEDULE_USES,
    DiffusionRefiner,
    GaussianPolicy,
    GaussianPolicyHead,
)
from recbole_diffureason.modules.thinking import POOLINGS, THINK_CONTEXTS, THINK_OUTPUTS, ThinkingTokens, build_pooling

# Table 3 rows -> the keys they fix (docs/design.md section 5.8).
ABLATIONS: Dict[str, Dict[str, object]] = {
    "wo_cot": {"reasoning_steps": 1},
    "wo_diffusion": {"use_diffusion": False},
    "wo_rl": {"beta": 0.0},
    "wo_mse": {"alpha": 0.0},
    "wo_diffusion_rl": {"use_diffusion": False, "beta": 0.0},
    "with_kl": {"kl_weight": 0.1},
    "two_stage": {"training_schedule": "two_stage"},
}

# Starting configurations one key selects; explicit keys win over them. ``paper`` is the paper's configuration
# as this plugin first implemented it (section 4.2 and Table 5 of the paper, and the [R] resolutions of
# docs/design.md section 5), so a run with ``preset: paper`` reproduces it whatever the defaults become.
PAPER: Dict[str, object] = {
    "reasoning_steps": 3, "think_layers": 2, "think_heads": 8, "think_inner_size": None, "think_dropout": 0.1,
    "think_step_embedding": True, "think_context": "full", "think_norm_first": True, "think_output": "direct",
    "pooling": "attention",
    "use_diffusion": True, "policy_mean": "cond", "diffusion_steps": 16, "denoiser_hidden_mult": 4,
    "denoiser_dropout": 0.1, "denoiser_output": "direct", "denoiser_zero_init": False, "sigma_min": 0.001,
    "sigma_max": 1.0, "sigma_softplus_offset": 0.00001, "schedule_s": 0.008, "schedule_use": "none",
    "init_noise_scale": 1.0, "init_noise_relative": False, "train_sample_intermediate": True,
    "eval_sample_intermediate": False, "eval_init_noise": "seeded", "eval_noise_seed": 2020, "eval_noise_draws": 1,
    "eval_residual_scale": 1.0, "eval_latent": "mu",
    "alpha": 1.0, "beta": 1.0, "detach_target": True, "diff_loss": "mse", "diff_loss_reduction": "mean",
    "group_size": 8, "reward": "hit", "reward_k": 1, "clip_eps": 0.2, "adv_eps": 0.0001, "detach_actions": True,
    "align_gradient": "score",
    "kl_weight": 0.0, "training_schedule": "end_to_end", "two_stage_finetune_loss": "full",
    "backbone_rec_weight": 0.0, "thought_rec_weight": 0.0, "backbone_checkpoint": None, "reasoning_init": "pytorch", "reasoning_learning_rate": None,
    "clip_grad_norm": {"max_norm": 5.0},
}
# The defaults until 2026-12-06, chosen on validation at d=64 from scratch (docs/results/diagnosis.md): four named
# deviations from PAPER. The refinement starts exactly at the backbone's h_L (zero-initialised residual), the
# diffusion loss keeps only the direction of the target embedding (its MSE fought the CE on scale), and the GRPO
# gradient is preconditioned by the Fisher information (the score-function gradient grows as 1/sigma and silenced
# the CE under clipping). Benchmark rows named "recommended" before that date ran this preset.
ANCHOR_COS_NATURAL: Dict[str, object] = {
    **PAPER,
    "denoiser_output": "anchor_residual", "denoiser_zero_init": True, "diff_loss": "cosine",
    "align_gradient": "natural",
}
# The configuration chosen on the validation split (docs/results/diagnosis.md, docs/results/beauty_cpu_seeds.md),
# which properties/model/DiffuReasonSASRec.yaml uses as its defaults: ANCHOR_COS_NATURAL with the backbone trained
# first, alone, as a standalone SASRec (joint training left the backbone 4% below one, and the reasoning path only
# made up for it), and the backbone's own next-item CE kept in the loss after that.
RECOMMENDED: Dict[str, object] = {
    **ANCHOR_COS_NATURAL,
    "training_schedule": "backbone_first", "backbone_rec_weight": 1.0,
}
# The configuration with the best validation score at the paper's size (d=256, docs/results/beauty_paper_gpu_seeds.md):
# every reverse step outputs the condition plus a zero-initialised residual, and the backbone's own next-item CE is
# added to the loss, which keeps the backbone a recommender in its own right. There the recommended defaults fit the
# training data as SASRec does but generalise worse (validation plateaus below SASRec's from epoch 6).
COND_RESIDUAL_AUX: Dict[str, object] = {
    **PAPER,
    "denoiser_output": "cond_residual", "denoiser_zero_init": True, "backbone_rec_weight": 1.0,
}
# The best 3-seed gain over SASRec at d=64 (docs/results/beauty_cpu_seeds.md, DR-anchor-aux-warm-r5-thoughtce-mean,
# which started from a converged SASRec through backbone_checkpoint): RECOMMENDED with every later thought trained as
# a next-item prediction, as ReaRec supervises its steps, and the mean of the steps scored and early-stopped on.
SUPERVISED_THOUGHTS: Dict[str, object] = {
    **RECOMMENDED,
    "reasoning_steps": 5, "thought_rec_weight": 1.0, "eval_latent": "steps_mean",
}
PRESETS: Dict[str, Dict[str, object]] = {"paper": PAPER, "recommended": RECOMMENDED,
                                         "cond_residual_aux": COND_RESIDUAL_AUX,
                                         "anchor_cos_natural": ANCHOR_COS_NATURAL,
                                         "supervised_thoughts": SUPERVISED_THOUGHTS}


# What evaluation scores: mu (the paper, Eq. 13); backbone: h_L alone, to measure what the reasoning path adds;
# steps_mean (not in the paper): the mean of tau_1..tau_R and mu, ReaRec ERL's inference-time mean over its reasoning
# states. With tied item embeddings the mean latent scores as the mean of the steps' scores. It only helps when
# each thought is itself a next-item prediction (thought_rec_weight > 0); the paper's unsupervised thoughts score
# near chance alone (docs/results/diagnosis.md).
EVAL_LATENTS = ("mu", "backbone", "steps_mean")

# end_to_end: the paper. two_stage: Table 3's "with Two-stage". backbone_first (not in the paper): the backbone
# is first trained alone with its own next-item CE, as a standalone SASRec, early-stopped on validation; the full
# model then starts from that converged backbone (docs/results/diagnosis.md: trained jointly, the backbone ends
# below a standalone SASRec and the reasoning path only makes up for it).
TRAINING_SCHEDULES = ("end_to_end", "two_stage", "backbone_first")


class ReasoningOutput(NamedTuple):
    policy: GaussianPolicy
    thoughts: torch.Tensor
    cond: torch.Tensor


class DiffuReason(ReasoningRecommender):
    """Think-then-Diffuse (DiffuReason, Eqs. 1-13). Abstract: see :class:`DiffuReasonSASRec`."""

    abstract = True
    presets = {"preset": PRESETS, "ablation": ABLATIONS}
    loss_names = ("rec", "diff", "align", "kl", "backbone_rec", "thought_rec")
    config_keys: Dict[str, Key] = {
        "hidden_size": Int(min=2),
        "preset": Choice(choices=tuple(PRESETS), optional=True),
        "ablation": Choice(choices=tuple(ABLATIONS), optional=True),
        "reasoning_steps": Int(min=1),
        "think_layers": Int(min=1),
        "think_heads": Int(min=1),
        "think_inner_size": Int(min=1, optional=True),
        "think_dropout": Float(min=0.0, max=1.0, max_inclusive=False),
        "think_step_embedding": Bool(),
        "think_context": Choice(choices=THINK_CONTEXTS),
        "think_norm_first": Bool(),
        "think_output": Choice(choices=THINK_OUTPUTS),
        "pooling": Choice(choices=POOLINGS),
        "use_diffusion": Bool(),
        "policy_mean": Choice(choices=("cond", "last_thought")),
        "diffusion_steps": Int(min=1),
        "denoiser_hidden_mult": Int(min=1),
        "denoiser_dropout": Float(min=0.0, max=1.0, max_inclusive=False),
        "denoiser_output": Choice(choices=DENOISER_OUTPUTS),
        "denoiser_zero_init": Bool(),
        "sigma_min": Float(min=0.0, min_inclusive=False),
        "sigma_max": Float(min=0.0, min_inclusive=False),
        "sigma_softplus_offset": Float(min=0.0),
        "schedule_s": Float(min=0.0),
        "schedule_use": Choice(choices=SCHEDULE_USES),
        "init_noise_scale": Float(min=0.0),
        "init_noise_relative": Bool(),
        "train_sample_intermediate": Bool(),
        "eval_sample_intermediate": Bool(),
        "eval_init_noise": Choice(choices=("seeded", "zero")),
        "eval_noise_seed": Int(min=0),
        "eval_noise_draws": Int(min=1),
        "eval_latent": Choice(choices=EVAL_LATENTS),
        "eval_residual_scale": Float(min=0.0),
        "alpha": Float(min=0.0),
        "beta": Float(min=0.0),
        "detach_target": Bool(),
        "diff_loss_reduction": Choice(choices=("mean", "sum")),
        "diff_loss": Choice(choices=("mse", "cosine")),
        "backbone_rec_weight": Float(min=0.0),
        "thought_rec_weight": Float(min=0.0),
        "group_size": Int(min=2),
        "reward": Choice(choices=REWARDS),
        "reward_k": Int(min=1),
        "reward_rank_method": Choice(choices=RANK_METHODS),
        "reward_candidates": Int(min=1),
        "clip_eps": Float(min=0.0),
        "adv_eps": Float(min=0.0, min_inclusive=False),
        "detach_actions": Bool(),
        "align_gradient": Choice(choices=ALIGN_GRADIENTS),
        "kl_weight": Float(min=0.0),
        "training_schedule": Choice(choices=TRAINING_SCHEDULES),
        "stage1_epochs": Int(min=1, optional=True),
        "two_stage_finetune_loss": Choice(choices=("full", "rec_align")),
        "reasoning_init": Choice(choices=("pytorch", "recbole")),
        "reasoning_learning_rate": Float(min=0.0, min_inclusive=False, optional=True),
        "diagnose": Bool(),
        "diagnose_every": Int(min=1),
    }

    @classmethod
    def check_config(cls, config: dict) -> None:
        if config["sigma_min"] > config["sigma_max"]:
            raise ConfigError(f"'sigma_min' ({config['sigma_min']}) must not exceed 'sigma_max' ({config['sigma_max']}).")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self._read_loss_config(config)
        self._read_noise_config(config)
        self.build_backbone(config, dataset)
        self.thinker = ThinkingTokens(
            self.hidden_size,
            n_steps=config["reasoning_steps"],
            n_layers=config["think_layers"],
            n_heads=config["think_heads"],
            inner_size=config["think_inner_size"],
            dropout=config["think_dropout"],
            step_embedding=config["think_step_embedding"],
            context=config["think_context"],
            norm_first=config["think_norm_first"],
            output=config["think_output"],
        )
        self.pooling = build_pooling(config["pooling"], self.hidden_size)
        self.use_diffusion = config["use_diffusion"]
        self.policy_mean = config["policy_mean"]
        sigma_args = dict(
            sigma_min=config["sigma_min"], sigma_max=config["sigma_max"], softplus_offset=config["sigma_softplus_offset"]
        )
        if self.use_diffusion:
            self.refiner = DiffusionRefiner(
                self.hidden_size,
                n_steps=config["diffusion_steps"],
                hidden_mult=config["denoiser_hidden_mult"],
                dropout=config["denoiser_dropout"],
                output=config["denoiser_output"],
                schedule_s=config["schedule_s"],
                schedule_use=config["schedule_use"],
                zero_init=config["denoiser_zero_init"],
                **sigma_args,
            )
        else:
            self.policy_head = GaussianPolicyHead(self.hidden_size, **sigma_args)
        if config["reasoning_init"] == "recbole":
            for module in self.reasoning_modules():
                module.apply(self.init_like_sasrec)
            # The zero-initialised outputs are what make the model start as its backbone; RecBole's init undid them.
            self.thinker.reset_zero_output()
            if self.use_diffusion:
                self.refiner.reset_zero_output()
        self.training_schedule = config["training_schedule"]
        # A backbone loaded from a trained checkpoint is the one backbone_first would train first.
        self.backbone_trained = bool(config["backbone_checkpoint"]) if "backbone_checkpoint" in config else False
        self.stage1_epochs = config["stage1_epochs"] or config["epochs"]
        self.two_stage_finetune_loss = config["two_stage_finetune_loss"]

    def _read_loss_config(self, config) -> None:
        self.alpha, self.beta = float(config["alpha"]), float(config["beta"])
        self.detach_target = config["detach_target"]
        self.diff_loss_reduction = config["diff_loss_reduction"]
        self.diff_loss_kind = config["diff_loss"]
        self.backbone_rec_weight = float(config["backbone_rec_weight"])
        self.thought_rec_weight = float(config["thought_rec_weight"])
        self.group_size = config["group_size"]
        self.reward, self.reward_k = config["reward"], config["reward_k"]
        self.reward_rank_method, self.reward_candidates = config["reward_rank_method"], config["reward_candidates"]
        self.clip_eps, self.adv_eps = float(config["clip_eps"]), float(config["adv_eps"])
        self.detach_actions = config["detach_actions"]
        self.align_gradient = config["align_gradient"]
        self.kl_weight = float(config["kl_weight"])
        self.reasoning_learning_rate = config["reasoning_learning_rate"]
        self.diagnose, self.diagnose_every = config["diagnose"], config["diagnose_every"]
        self._diagnose_batches = 0

    def _read_noise_config(self, config) -> None:
        self.init_noise_scale = float(config["init_noise_scale"])
        self.init_noise_relative = config["init_noise_relative"]
        self.train_sample_intermediate = config["train_sample_intermediate"]
        self.eval_sample_intermediate = config["eval_sample_intermediate"]
        self.eval_init_noise = config["eval_init_noise"]
        self.eval_noise_seed = config["eval_noise_seed"]
        self.eval_noise_draws = config["eval_noise_draws"]
        self.eval_latent = config["eval_latent"]
        self.eval_residual_scale = float(config["eval_residual_scale"])

    # ------------------------------------------------------------------ subclass hooks
    def build_backbone(self, config, dataset) -> None:
        raise NotImplementedError

    def encode(self, interaction) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backbone states ``H [B, L, d]``, padding mask ``[B, L]`` (True = pad) and ``h_L [B, d]``."""
        raise NotImplementedError

    def score_all(self, z: torch.Tensor) -> torch.Tensor:
        """Scores of every item id (column 0 = padding) for latent ``z [B, d]``."""
        raise NotImplementedError

    def target_vector(self, interaction) -> torch.Tensor:
        """``v_target`` of the diffusion loss, ``[B, d]``."""
        raise NotImplementedError

    def action_rewards(self, actions: torch.Tensor, anchor_scores: torch.Tensor, interaction) -> torch.Tensor:
        """Reward of each sampled latent ``actions [B, G, d]``, ``[B, G]``."""
        raise NotImplementedError

    def reasoning_modules(self) -> List[nn.Module]:
        return [self.thinker, self.pooling, self.refiner if self.use_diffusion else self.policy_head]

    def parameter_groups(self):
        """One learning rate for the backbone and ``reasoning_learning_rate`` for the modules DiffuReason adds."""
        if self.stage == "backbone":
            return self.backbone_parameters()
        if self.reasoning_learning_rate is None:
            return self.parameters()
        return [
            {"params": self.backbone_parameters()},
            {"params": self.reasoning_parameters(), "lr": float(self.reasoning_learning_rate)},
        ]

    def reasoning_parameters(self) -> List[nn.Parameter]:
        return [p for module in self.reasoning_modules() for p in module.parameters()]

    def backbone_parameters(self) -> List[nn.Parameter]:
        """Parameters of the backbone (everything the reasoning modules do not own)."""
        reasoning = {id(p) for p in self.reasoning_parameters()}
        return [p for p in self.parameters() if id(p) not in reasoning]

    # ------------------------------------------------------------------ reasoning
    def warm_start_noise(self, noise: torch.Tensor, last_thought: torch.Tensor) -> torch.Tensor:
        """``eps_init`` as added to ``tau_R``: unit scale (Eq. 3), or, with ``init_noise_relative``, rescaled so
        that its expected norm is ``init_noise_scale * ||tau_R||`` whatever the width d."""
        if not self.init_noise_relative:
            return noise
        scale = last_thought.detach().norm(dim=-1, keepdim=True) / last_thought.size(-1) ** 0.5
        return noise * scale

    def initial_noise(self, interaction, like: torch.Tensor, draw: int = 0) -> torch.Tensor:
        """``eps_init``: fresh in training; in evaluation zero, or keyed by user id (``eval_init_noise``)."""
        if self.training:
            return torch.randn_like(like) * self.init_noise_scale
        if self.eval_init_noise == "zero" or self.init_noise_scale == 0:
            return torch.zeros_like(like)
        noise = self.keyed_noise(interaction, like.size(-1), self.eval_noise_seed, draw, self.eval_noise_draws)
        return noise.to(like.device, like.dtype) * self.init_noise_scale

    def forward(
        self,
        interaction,
        init_noise: Optional[torch.Tensor] = None,
        draw: int = 0,
        step_noise: Optional[torch.Tensor] = None,
    ) -> ReasoningOutput:
        """Think, then diffuse: the policy ``(mu, sigma)`` for each sequence of ``interaction``."""
        states, padding, h_last = self.encode(interaction)
        thoughts = self.thinker(states, padding, h_last)
        cond = self.pooling(thoughts)
        if self.use_diffusion:
            if init_noise is None:
                init_noise = self.initial_noise(interaction, thoughts[:, -1], draw)
            start = thoughts[:, -1] + self.warm_start_noise(init_noise, thoughts[:, -1])
            sample = self.train_sample_intermediate if self.training else self.eval_sample_intermediate
            policy = self.refiner(start, cond, sample_intermediate=sample, step_noise=step_noise,
                                  anchor=thoughts[:, 0])
        else:
            mean = cond if self.policy_mean == "cond" else thoughts[:, -1]
            policy = self.policy_head(mean, cond)
        return ReasoningOutput(policy, thoughts, cond)

    def anchor(self, interaction, latent: Optional[str] = None) -> torch.Tensor:
        """``z_anchor = mu``; averaged over ``eval_noise_draws`` noise draws in evaluation. ``latent`` (one of
        ``EVAL_LATENTS``) overrides ``eval_latent`` for this call, so analyses can score mu whatever the model scores.

        With ``eval_latent: backbone`` evaluation scores the backbone's own ``h_L`` instead: what the backbone
        inside this model ranks without the reasoning path, so the path's contribution can be measured. So does
        the ``backbone`` stage of ``backbone_first``, whose early stopping must judge the backbone it trains.
        With ``eval_latent: steps_mean`` it scores the mean of the thoughts and ``mu`` (see ``EVAL_LATENTS``).
        """
        latent = latent or self.eval_latent
        if not self.training and (latent == "backbone" or self.stage == "backbone"):
            return self.encode(interaction)[2]
        if self.training:
            return self.forward(interaction).policy.mu
        draws = self.eval_noise_draws if self.use_diffusion else 1
        outputs = [self.forward(interaction, draw=i) for i in range(draws)]
        mu = torch.stack([out.policy.mu for out in outputs]).mean(0)
        mu = self.scale_reasoning_shift(mu, outputs[0].thoughts[:, 0])
        if latent == "steps_mean":
            return torch.cat([outputs[0].thoughts, mu.unsqueeze(1)], dim=1).mean(dim=1)
        return mu

    def scale_reasoning_shift(self, mu: torch.Tensor, h_last: torch.Tensor) -> torch.Tensor:
        """``h_L + s (mu - h_L)`` with ``s = eval_residual_scale``: 1 scores ``mu`` (the model), 0 the backbone
        alone; other values weaken or extrapolate the shift the reasoning path makes, as a guidance scale does in
        a diffusion model. Linear in the latent, so it is also the score fusion ``(1 - s) s(h_L) + s s(mu)``."""
        if self.eval_residual_scale == 1.0:
            return mu
        return h_last + self.eval_residual_scale * (mu - h_last)

    # ------------------------------------------------------------------ losses
    def diffusion_loss(self, mu: torch.Tensor, interaction) -> torch.Tensor:
        target = self.target_vector(interaction)
        if self.detach_target:
            target = target.detach()
        if self.diff_loss_kind == "cosine":
            return (1.0 - F.cosine_similarity(mu, target, dim=-1)).mean()
        loss = F.mse_loss(mu, target, reduction="none")
        return loss.mean() if self.diff_loss_reduction == "mean" else loss.sum(dim=-1).mean()

    def alignment_active(self) -> bool:
        return self.beta > 0 and self.stage != "pretrain"

    def mse_active(self) -> bool:
        return self.alpha > 0 and not (self.stage == "finetune" and self.two_stage_finetune_loss == "rec_align")

    def next_item_ce(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Full-catalogue cross-entropy of latent ``z`` against the next item (SASRec's CE loss)."""
        return F.cross_entropy(self.score_all(z), target)

    def thought_ce(self, thoughts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean next-item CE of the thoughts after ``h_L`` (``tau_2 .. tau_R``), as ReaRec supervises each reasoning
        step. The paper supervises only ``mu``, which leaves these thoughts free latents that score items near
        chance (docs/results/beauty_cpu_seeds_gains.md), so the refinement starts from a point outside the item
        space; this term makes each step a next-item prediction. Zero when ``R = 1``."""
        if thoughts.size(1) < 2:
            return thoughts.new_zeros(())
        later = thoughts[:, 1:]
        return self.next_item_ce(later.reshape(-1, later.size(-1)), target.repeat_interleave(later.size(1)))

    def backbone_only_loss(self, interaction) -> Tuple[torch.Tensor, ...]:
        """The ``backbone`` stage of ``backbone_first``: the backbone's own next-item CE on ``h_L``, which is
        SASRec's loss for the SASRec backbone, in the ``backbone_rec`` slot; the reasoning modules get no gradient."""
        backbone = self.next_item_ce(self.encode(interaction)[2], interaction[self.POS_ITEM_ID])
        zero = backbone.new_zeros(())
        return zero, zero, zero, zero, backbone, zero

    def calculate_loss(self, interaction):
        if self.stage == "backbone":
            return self.backbone_only_loss(interaction)
        target = interaction[self.POS_ITEM_ID]
        init_noise = torch.randn(target.size(0), self.hidden_size, device=target.device) * self.init_noise_scale
        out = self.forward(interaction, init_noise=init_noise)
        mu, sigma = out.policy
        scores = self.score_all(mu)
        rec = F.cross_entropy(scores, target)
        zero = rec.new_zeros(())
        diff = self.alpha * self.diffusion_loss(mu, interaction) if self.mse_active() else zero
        align, kl = zero, zero
        if self.alignment_active():
            actions = sample_actions(mu, sigma, self.group_size, detach=self.detach_actions)
            rewards = self.action_rewards(actions.detach(), scores.detach(), interaction)
            align, stats = gaussian_policy_loss(mu, sigma, actions, rewards, self.clip_eps, self.adv_eps,
                                                self.align_gradient)
            align = self.beta * align
            self.record_diagnostics(**stats)
            if self.kl_weight > 0:
                kl = self.beta * self.kl_weight * self.reference_kl(interaction, init_noise, mu, sigma)
        backbone = zero
        if self.backbone_rec_weight > 0:  # h_L = tau_1
            backbone = self.backbone_rec_weight * self.next_item_ce(out.thoughts[:, 0], target)
        thought = self.thought_rec_weight * self.thought_ce(out.thoughts, target) if self.thought_rec_weight > 0 else zero
        self.record_diagnostics(sigma_mean=float(sigma.detach().mean()), mu_norm=float(mu.detach().norm(dim=-1).mean()))
        if self.diagnose:
            self.record_diagnostics(**self.fit_diagnostics(out, init_noise, interaction))
            self._diagnose_batches += 1
            if (self._diagnose_batches - 1) % self.diagnose_every == 0:  # the first batch, then every diagnose_every
                terms = {"rec": rec, "diff": diff, "align": align, "kl": kl, "backbone_rec": backbone,
                         "thought_rec": thought}
                self.record_diagnostics(**self.gradient_diagnostics(terms, mu, sigma))
        return rec, diff, align, kl, backbone, thought

    # ------------------------------------------------------------------ diagnosis (``diagnose: True``)
    @torch.no_grad()
    def fit_diagnostics(self, out: ReasoningOutput, init_noise: torch.Tensor, interaction) -> Dict[str, float]:
        """Where the training fit goes: CE of ``h_L`` against CE of ``mu``, and the norms of every stage.

        ``ce_h_last`` is what the backbone alone would score on this batch; ``noise_to_thought`` is
        ``||eps_init|| / ||tau_R||``, i.e. how much of the warm start survives the noise.
        """
        target = interaction[self.POS_ITEM_ID]
        h_last, last_thought, mu = out.thoughts[:, 0], out.thoughts[:, -1], out.policy.mu
        norm = lambda x: float(x.norm(dim=-1).mean())  # noqa: E731
        noise = self.warm_start_noise(init_noise, last_thought) if self.use_diffusion else torch.zeros_like(mu)
        return {
            "ce_h_last": float(self.next_item_ce(h_last, target)),
            "norm_h_last": norm(h_last), "norm_tau_R": norm(last_thought), "norm_c": norm(out.cond),
            "norm_target": norm(self.target_vector(interaction)),
            "noise_to_thought": float((noise.norm(dim=-1) / last_thought.norm(dim=-1).clamp(min=1e-12)).mean()),
            "cos_mu_h_last": float(F.cosine_similarity(mu, h_last, dim=-1).mean()),
        }

    def gradient_diagnostics(self, terms: Dict[str, torch.Tensor], mu: torch.Tensor, sigma: torch.Tensor) -> Dict[str, float]:
        """Norm of the gradient each loss term sends into the backbone, and the GRPO gradient on ``mu``.

        ``grad_mu_align`` is the mean per-row norm of dL_align/dmu; it grows as 1/sigma (docs/design.md 5.5.1),
        so it is logged next to ``inv_sigma`` = mean 1/sigma.
        """
        params = [p for p in self.backbone_parameters() if p.requires_grad]
        stats: Dict[str, float] = {"inv_sigma": float((1.0 / sigma.detach()).mean())}
        for name, term in terms.items():
            if not term.requires_grad:
                continue
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            stats[f"grad_backbone_{name}"] = float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)))
        if terms["align"].requires_grad:
            (grad_mu,) = torch.autograd.grad(terms["align"], mu, retain_graph=True)
            stats["grad_mu_align"] = float(grad_mu.norm(dim=-1).mean() * mu.size(0))
        return stats

    # ------------------------------------------------------------------ "with KL" reference policy
    def on_epoch_start(self, epoch: int) -> None:
        if self.kl_weight > 0 and self.training_schedule != "two_stage" and self.stage != "backbone":
            self.snapshot_reference()

    def reference_kl(
        self, interaction, init_noise: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """``KL(pi_theta || pi_ref)``; ``pi_ref`` runs without dropout on the same input and warm-start noise.

        ``pi_ref`` is refreshed every epoch (end to end) or is the stage-1 model (two stages), docs/design.md
        section 5.8.
        """
        if not self.has_reference:
            self.snapshot_reference()
        ref = self.reference_call(interaction, init_noise=init_noise).policy
        return diag_gaussian_kl(mu, sigma, ref.mu, ref.sigma).mean()

    # ------------------------------------------------------------------ stages
    def training_stages(self) -> List[Tuple[str, int]]:
        if self.training_schedule == "two_stage":
            return [("pretrain", self.stage1_epochs), ("finetune", self.epochs)]
        if self.training_schedule == "backbone_first" and not self.backbone_trained:
            return [("backbone", self.stage1_epochs), ("train", self.epochs)]
        return [("train", self.epochs)]

    def set_training_stage(self, name: str, resumed: bool = False) -> None:
        """Fine-tuning freezes the stage-1 model as ``pi_ref``; a resumed fine-tuning keeps the one it saved."""
        self.stage = name
        if name == "finetune" and self.kl_weight > 0 and not (resumed and self.has_reference):
            self.snapshot_reference()

    # ------------------------------------------------------------------ RecBole prediction API
    def predict(self, interaction) -> torch.Tensor:
        mu = self.anchor(interaction)
        return self.score_items(mu, interaction[self.ITEM_ID])

    def score_items(self, z: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Score of one item per row; subclasses with a cheaper form override it."""
        return self.score_all(z).gather(1, items.unsqueeze(1)).squeeze(1)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.score_all(self.anchor(interaction))
