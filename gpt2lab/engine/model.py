"""GPT-2, in one readable file.

The architecture is OpenAI's GPT-2 as released in their TensorFlow code and on the Hugging Face hub:
token + position embeddings, pre-LayerNorm transformer blocks, causal self-attention with one fused
`c_attn` projection, a tanh-GELU MLP, a final LayerNorm, and an output head tied to the token embedding.
Parameter names match Hugging Face's `GPT2LMHeadModel` so pretrained weights load by name.

Past GPT-2: the fields after `dropout` in GPTConfig turn on, one at a time, the modded-nanogpt speedrun's early
changes to the architecture (rotary positions, RMSNorm, QK-norm, ReLU^2, zero-initialised projections, an untied
head, a norm after the embedding, logit soft-capping). Their defaults are GPT-2; gpt2lab.engine.recipes names
them as ideas and says where each comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTN_IMPLS = ("naive", "flash")
# "full": every logit, then cross-entropy; "chunked": head + loss fused in chunks (gpt2lab.engine.losses), the logits
# never exist whole; "liger": Liger-Kernel's fused Triton kernel (CUDA only, the optional `fast` extra).
LOSS_IMPLS = ("full", "chunked", "liger")
NORMS = ("layernorm", "rmsnorm")
MLP_ACTS = ("gelu", "relu2")
ROPE_BASE = 10_000.0  # RoFormer's


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024  # longest sequence (number of position embeddings)
    vocab_size: int = 50257  # 50,000 BPE merges + 256 byte tokens + <|endoftext|>
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    attn: str = "flash"  # "naive": explicit masked softmax; "flash": F.scaled_dot_product_attention
    loss: str = "full"  # how forward(idx, targets) computes the loss: one of LOSS_IMPLS
    # Dropout on the embeddings and on what each attention and MLP block adds to the residual stream, in training
    # only. The video's run uses none: one pass over 10B tokens cannot memorize. A small model going several times
    # over Tiny Shakespeare's 300k tokens does, and dropout narrows the gap between its train and val loss.
    dropout: float = 0.0
    # Past GPT-2 (gpt2lab.engine.recipes): each default is GPT-2's.
    rope: bool = False  # rotary position embeddings on q and k, in place of the learned wpe table
    norm: str = "layernorm"  # "layernorm" (gain and bias) | "rmsnorm" (gain only, no mean subtracted)
    qk_norm: bool = False  # RMS-normalise each head's queries and keys before the dot product
    mlp_act: str = "gelu"  # "gelu" (tanh approximation) | "relu2" (relu(x) ** 2)
    zero_init_proj: bool = False  # attention and MLP output projections start at zero: each block the identity
    tie_head: bool = True  # the output head shares the token embedding's matrix
    embed_norm: bool = False  # normalise the token embeddings before the first block
    logit_softcap: float = 0.0  # logits = cap * tanh(logits / cap); 0 turns it off

    def __post_init__(self):
        for field in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, field) <= 0:
                raise ValueError(f"GPTConfig.{field} must be positive, got {getattr(self, field)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                "each head gets n_embd // n_head channels"
            )
        if self.attn not in ATTN_IMPLS:
            raise ValueError(f"attn must be one of {ATTN_IMPLS}, got {self.attn!r}")
        if self.loss not in LOSS_IMPLS:
            raise ValueError(f"loss must be one of {LOSS_IMPLS}, got {self.loss!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.mlp_act not in MLP_ACTS:
            raise ValueError(f"mlp_act must be one of {MLP_ACTS}, got {self.mlp_act!r}")
        if self.rope and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rope rotates channel pairs: the head size n_embd // n_head "
                             f"({self.n_embd // self.n_head}) must be even")
        if not self.logit_softcap >= 0:
            raise ValueError(f"logit_softcap must be >= 0 (0: off), got {self.logit_softcap}")

    def not_gpt2(self) -> list[str]:
        """The architecture fields set away from GPT-2's: a model with any of them cannot hold GPT-2's weights
        (zero_init_proj only changes the initial weights, which loaded ones replace)."""
        gpt2 = GPTConfig()
        return [f for f in ("rope", "norm", "qk_norm", "mlp_act", "tie_head", "embed_norm", "logit_softcap")
                if getattr(self, f) != getattr(gpt2, f)]


# Named model shapes (`--model`; not the run presets of gpt2lab.run.config). The four GPT-2 sizes are OpenAI's;
# the small ones exist so the same code trains in minutes on a laptop CPU (and in seconds in tests).
SHAPES: dict[str, GPTConfig] = {
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    "cpu-small": GPTConfig(block_size=256, n_layer=4, n_head=4, n_embd=96),
    "cpu-shakespeare": GPTConfig(block_size=256, n_layer=4, n_head=4, n_embd=64),  # cpu-tiny-shakespeare's model
    "cpu-tiny": GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=64),
    "test": GPTConfig(block_size=32, vocab_size=512, n_layer=2, n_head=2, n_embd=32),
}


def get_config(name: str, **overrides) -> GPTConfig:
    """A named preset with optional field overrides, e.g. get_config("gpt2", vocab_size=50304)."""
    if name not in SHAPES:
        raise ValueError(f"unknown model preset {name!r}; available: {', '.join(SHAPES)}")
    return replace(SHAPES[name], **overrides)


def make_norm(config: GPTConfig) -> nn.Module:
    """GPT-2's LayerNorm (subtract the mean, divide by the standard deviation, gain and bias), or RMSNorm (divide
    by the root mean square, gain only: Zhang & Sennrich 2019)."""
    return nn.RMSNorm(config.n_embd) if config.norm == "rmsnorm" else nn.LayerNorm(config.n_embd)


class Rotary(nn.Module):
    """Rotary position embeddings (Su et al. 2021, RoFormer). Channel i of a head's first half and channel i of its
    second half form a pair, rotated at position t by the angle t * base ** (-2i / head_dim). A query at t and a key
    at s are then both rotated, and their dot product depends on t - s alone: position becomes relative."""

    def __init__(self, head_dim: int, block_size: int):
        super().__init__()
        inv_freq = ROPE_BASE ** -(torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float64), inv_freq)  # (block_size, head_dim / 2)
        # float64 angles (in float32, position 1000's would be off by 1e-4 rad); stored as float32. Not persistent:
        # computed, never learned, so the state dict holds no position table at all.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, ..., head_dim): any head dimensions after T
        T, half = x.size(1), x.size(-1) // 2
        at = (T, *[1] * (x.dim() - 3), half)  # the angles broadcast over the head dimensions
        cos, sin = self.cos[:T].view(at).to(x.dtype), self.sin[:T].view(at).to(x.dtype)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.attn = config.attn
        self.qk_norm = config.qk_norm
        self.rotary = Rotary(config.n_embd // config.n_head, config.block_size) if config.rope else None
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_SCALE = True  # see GPT._init_weights
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)
        if self.qk_norm or self.rotary is not None:
            # queries and keys side by side, (B, T, 2, n_head, head_dim): normed and rotated in one pass each
            # rather than two (a small model's step is many small operations; each costs its overhead)
            qk = qkv[:, :, :2]
            if self.qk_norm:  # every query and key row to unit root mean square, no gain
                qk = F.rms_norm(qk, (qk.size(-1),))
            if self.rotary is not None:
                qk = self.rotary(qk)
            (q, k), v = qk.unbind(2), qkv[:, :, 2]
        else:
            q, k, v = qkv.unbind(2)
        # (B, T, n_head, head_dim) -> (B, n_head, T, head_dim): heads become a batch dimension
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.attn == "flash":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(future, float("-inf")).softmax(dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_drop(self.c_proj(y))


class ReLU2(nn.Module):
    """relu(x) ** 2 (So et al. 2021, Primer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


ACTIVATIONS = {"gelu": lambda: nn.GELU(approximate="tanh"), "relu2": ReLU2}  # GPT-2 used GELU's tanh approximation


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.act = config.mlp_act
        self.add_module(self.act, ACTIVATIONS[self.act]())  # self.gelu (GPT-2) or self.relu2
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_SCALE = True
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resid_drop(self.c_proj(getattr(self, self.act)(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pre-LayerNorm: the residual stream itself is never normalized, so gradients flow straight through
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CappedHead(nn.Linear):
    """The output head with tanh soft-capping (as in Gemma 2): logits = cap * tanh(head(x) / cap), each strictly
    inside (-cap, cap). An nn.Linear still, so its weight is `lm_head.weight` and every caller gets capped logits."""

    def __init__(self, n_embd: int, vocab_size: int, cap: float):
        super().__init__(n_embd, vocab_size, bias=False)
        self.cap = cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cap * torch.tanh(self.uncapped(x) / self.cap)

    def uncapped(self, x: torch.Tensor) -> torch.Tensor:
        """The head's logits before the cap (GPT.forward caps them inside the loss)."""
        return super().forward(x)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        parts = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if not config.rope:  # rotary positions need no table
            parts["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        parts.update(
            drop=nn.Dropout(config.dropout),  # no weights: the state dict is Hugging Face's, as before
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=make_norm(config),
        )
        if config.embed_norm:
            parts["ln_e"] = make_norm(config)
        self.transformer = nn.ModuleDict(parts)
        cap = config.logit_softcap
        self.lm_head = CappedHead(config.n_embd, config.vocab_size, cap) if cap else \
            nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_head:  # weight tying (as in GPT-2): the output head and the token embedding are one matrix
            self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        if config.zero_init_proj:  # after the others, so they draw the same random numbers as without it
            for module in self.modules():
                if getattr(module, "RESIDUAL_SCALE", False):
                    nn.init.zeros_(module.weight)
            if not config.tie_head:  # an untied head starts at zero too (speedrun record 8): uniform predictions
                nn.init.zeros_(self.lm_head.weight)

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2's init: N(0, 0.02) everywhere; projections that write into the residual stream are scaled
        # by 1/sqrt(2 * n_layer) because each layer adds two of them and the stream's variance grows.
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "RESIDUAL_SCALE", False):
                std *= (2 * self.config.n_layer) ** -0.5
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count, the tied head counted once. non_embedding drops the lookup tables: wpe, and wte when
        the head is untied (a tied wte is the head, a matmul, and counts)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(self.transformer[t].weight.numel() for t in ("wpe", "wte")
                     if t in self.transformer and not (t == "wte" and self.config.tie_head))
        return n

    def _check_input(self, idx: torch.Tensor) -> None:
        if idx.dim() != 2:
            raise ValueError(f"idx must be a (batch, time) tensor of token ids, got shape {tuple(idx.shape)}")
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.numel() and idx.device.type != "meta" and (int(idx.max()) >= self.config.vocab_size or int(idx.min()) < 0):
            raise ValueError(
                f"token ids must lie in [0, {self.config.vocab_size}); got min {int(idx.min())}, max {int(idx.max())}"
            )

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """The final hidden states (B, T, n_embd), after ln_f: what lm_head turns into logits.

        Callers that need logits at a few positions only (HellaSwag scores ending tokens) apply lm_head to
        just those rows: at GPT-2's vocabulary the head is most of the forward pass's arithmetic."""
        if not torch.compiler.is_compiling():  # checks that would break the compiled graph run eagerly only
            self._check_input(idx)
        x = self.transformer.wte(idx)
        if self.config.embed_norm:
            x = self.transformer.ln_e(x)
        if not self.config.rope:
            x = x + self.transformer.wpe(torch.arange(idx.size(1), device=idx.device))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (B, T, vocab) and, when targets are given, the mean cross-entropy loss.

        With a fused loss (config.loss "chunked" or "liger") and targets, the logits are never formed whole and
        None is returned in their place; without targets (sampling, HellaSwag) every path returns the logits.
        A model with logit_softcap computes its loss with losses.capped_cross_entropy (the cap and the loss fused,
        never forming the capped logits) whatever config.loss says, and also returns None for the logits."""
        x = self.features(idx)
        if targets is None:
            return self.lm_head(x), None
        if self.config.logit_softcap:  # the cap and the loss as one function: a fused loss, like "chunked"
            from gpt2lab.engine.losses import capped_cross_entropy

            return None, capped_cross_entropy(self.lm_head.uncapped(x), targets, self.config.logit_softcap)
        if self.config.loss == "chunked":
            from gpt2lab.engine.losses import chunked_cross_entropy

            # is_compiling() is fixed at trace time: a compiled model compiles the loss's chunk arithmetic too
            return None, chunked_cross_entropy(x, self.lm_head.weight, targets,
                                               compiled=torch.compiler.is_compiling())
        if self.config.loss == "liger":
            from gpt2lab.engine.losses import liger_cross_entropy

            return None, liger_cross_entropy()(self.lm_head.weight, x.reshape(-1, x.size(-1)), targets.reshape(-1))
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append `max_new_tokens` sampled tokens to each row of `idx` (B, T).

        temperature 0 means greedy decoding. Pass a seeded `torch.Generator` for reproducible samples:
        the same seed gives the same tokens, independent of the global RNG.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size :])
            logits = logits[:, -1, :].float()
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = logits.softmax(dim=-1)
                nxt = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx

    @torch.no_grad()
    def load_hf_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Copy a Hugging Face GPT-2 state dict into this model (transposing Conv1D weights)."""
        if self.config.not_gpt2():
            raise ValueError(f"GPT-2's weights fit GPT-2's architecture only, and this model changes "
                             f"{', '.join(self.config.not_gpt2())} (a recipe other than gpt2)")
        # HF GPT2Model checkpoints have bare keys ("h.0..."); GPT2LMHeadModel ones are prefixed "transformer.".
        sd = {(k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k): v for k, v in sd.items()}
        # attn.bias / attn.masked_bias are causal-mask buffers in old checkpoints, not parameters.
        sd = {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
        sd.pop("lm_head.weight", None)  # tied to wte
        ours = self.state_dict()
        ours.pop("lm_head.weight")
        if set(sd) != set(ours):
            missing, extra = sorted(set(ours) - set(sd)), sorted(set(sd) - set(ours))
            raise ValueError(f"checkpoint does not match GPT-2: missing {missing[:5]}, unexpected {extra[:5]}")
        # HF stores these as Conv1D, i.e. (in, out); nn.Linear wants (out, in).
        conv1d = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
        for k, v in sd.items():
            v = v.t() if k.endswith(conv1d) else v
            dst = ours[k]
            if k == "transformer.wte.weight":
                dst[: v.size(0)].copy_(v)  # padded rows keep their init; no real token ever hits them
            elif k == "transformer.wpe.weight":
                dst.copy_(v[: dst.size(0)])
            elif dst.shape != v.shape:
                raise ValueError(f"shape mismatch for {k}: checkpoint {tuple(v.shape)}, model {tuple(dst.shape)}")
            else:
                dst.copy_(v)

