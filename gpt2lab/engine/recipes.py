"""Past GPT-2's recipe: the modded-nanogpt speedrun's early ideas, each a named one-change setting.

The ladder (gpt2lab.engine.knobs) makes the same arithmetic faster; an idea here changes the arithmetic itself, the
model or its optimizer, so that fewer tokens reach the same loss. Each idea is a small record: its name, the one
change as code, why it should help, where it comes from (the speedrun record that brought it in, with that record's
time for GPT-2 124M to 3.28 FineWeb val loss on 8 H100s, and the paper behind it), and the GPTConfig and OptimConfig
fields it sets. A recipe is a set of ideas: `gpt2` (none of them: OpenAI's GPT-2 exactly), `modern` (all of them),
or any comma list such as `rope,relu2` (`python -m gpt2lab train --recipe rope,relu2`).

This registry is the only place an idea is named; the model (gpt2lab.engine.model) and the optimizer
(gpt2lab.engine.optim) implement the fields, each off by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpt2lab.base.errors import UserError


@dataclass(frozen=True)
class Idea:
    name: str
    change: str  # the one change, as code
    why: str  # why it should help, in a sentence
    source: str  # the speedrun record (its time before -> after) and the paper
    model: dict = field(default_factory=dict)  # GPTConfig fields it sets
    optim: dict = field(default_factory=dict)  # OptimConfig fields it sets


IDEAS: dict[str, Idea] = {idea.name: idea for idea in (
    Idea("rope", "q, k = rotate(q, pos), rotate(k, pos)  # no wpe table",
         "position enters as a rotation of queries and keys, so an attention score depends on how far apart two "
         "tokens are, not where they stand; no position table to learn",
         "speedrun record 2, rotary embeddings + tuned lr, 45 -> 31.4 min; Su et al. 2021, RoFormer",
         model={"rope": True}),
    Idea("rmsnorm", "nn.RMSNorm(n_embd)  # in place of nn.LayerNorm",
         "divide by the root mean square only: no mean to subtract and no bias, less work for the same "
         "stabilising effect",
         "Zhang & Sennrich 2019, Root Mean Square Layer Normalization; the speedrun's norm from record 2 on",
         model={"norm": "rmsnorm"}),
    Idea("qknorm", "q, k = rms_norm(q), rms_norm(k)  # per head, before the dot product",
         "bounded queries and keys keep attention logits from growing large, so the softmax does not saturate and "
         "a higher learning rate stays stable",
         "speedrun record 5, ReLU^2 + QK-norm + zero-init projections, 22.3 -> 15.2 min; Henry et al. 2020",
         model={"qk_norm": True}),
    Idea("relu2", "F.relu(x).square()  # in place of GELU",
         "a cheaper activation that measured slightly better than GELU: sparse like ReLU, smooth at the kink",
         "speedrun record 5, 22.3 -> 15.2 min; So et al. 2021, Primer",
         model={"mlp_act": "relu2"}),
    Idea("zeroinit", "nn.init.zeros_(c_proj.weight)  # attention and MLP output projections",
         "every block starts as the identity, so the residual stream begins as the embeddings and each layer "
         "grows its contribution from zero",
         "speedrun record 5, 22.3 -> 15.2 min (muP-like initialisation)",
         model={"zero_init_proj": True}),
    Idea("untied", "lm_head = nn.Linear(n_embd, vocab)  # its own matrix, not wte",
         "reading tokens in and writing them out are different jobs; one matrix for both compromises between "
         "them (39M more parameters at 124M scale, the same arithmetic per token)",
         "speedrun record 8, untied embed and head + RMSNorm after the embedding, 12.0 -> 10.8 min",
         model={"tie_head": False}),
    Idea("embnorm", "x = norm(wte(idx))  # before the first block",
         "the residual stream starts at unit scale whatever the embedding's scale, which an untied embedding "
         "trained on its own may drift from",
         "speedrun record 8, 12.0 -> 10.8 min",
         model={"embed_norm": True}),
    Idea("softcap", "logits = 30 * torch.tanh(logits / 30)",
         "logits cannot grow without bound, which keeps the model from becoming over-confident early in training",
         "speedrun record 9, tanh logit capping at 30 as in Gemma 2 (with value residuals, an embedding shortcut and "
         "momentum warmup in the same record), 10.8 -> 8.2 min",
         model={"logit_softcap": 30.0}),
    Idea("muon", "torch.optim.Muon(hidden 2-D matrices) + AdamW(embeddings, head, gains, biases)",
         "each matrix's momentum is orthogonalised (Newton-Schulz) before the step, so every direction of the "
         "update moves at the same rate instead of a few dominant ones",
         "speedrun record 3, Muon, 31.4 -> 24.9 min; Jordan et al. 2024, Muon",
         optim={"muon": True}),
)}

# Named recipes; anything else is read as a comma list of ideas.
RECIPES: dict[str, tuple[str, ...]] = {"gpt2": (), "modern": tuple(IDEAS)}
DEFAULT_RECIPE = "gpt2"


@dataclass(frozen=True)
class Recipe:
    name: str  # as given: gpt2, modern, or the comma list
    ideas: tuple[str, ...]  # in the registry's order

    @property
    def model(self) -> dict:
        """GPTConfig fields the recipe sets."""
        return {k: v for name in self.ideas for k, v in IDEAS[name].model.items()}

    @property
    def optim(self) -> dict:
        """OptimConfig fields the recipe sets."""
        return {k: v for name in self.ideas for k, v in IDEAS[name].optim.items()}

    def describe(self) -> str:
        return f"recipe {self.name}" + (f" ({', '.join(self.ideas)})" if self.name != ",".join(self.ideas) else "")


def recipe_choices() -> str:
    """What a recipe may be, in words (for messages and --help)."""
    return f"{' or '.join(RECIPES)} or a comma list of ideas from: {', '.join(IDEAS)}"


def get_recipe(spec: str) -> Recipe:
    """`gpt2`, `modern`, or a comma list of ideas (`rope,relu2`). Unknown names: UserError, one line."""
    if spec in RECIPES:
        return Recipe(spec, RECIPES[spec])
    names = [s.strip() for s in spec.split(",")]
    unknown = [n for n in names if n not in IDEAS]
    if unknown or not spec.strip():
        raise UserError(f"unknown recipe {spec!r}: a recipe is {recipe_choices()}")
    return Recipe(spec, tuple(n for n in IDEAS if n in names))


def canonical(spec: str) -> str:
    """One spelling per recipe, for comparing two: `relu2,rope` and `rope, relu2` are both `rope,relu2`,
    `modern` and the list of every idea are `modern`, and the empty list is `gpt2`."""
    ideas = get_recipe(spec).ideas
    for name, members in RECIPES.items():
        if ideas == members:
            return name
    return ",".join(ideas)
