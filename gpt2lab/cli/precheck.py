"""Before `make book` runs its first chapter: can this machine build the whole book? Answers in seconds.

Every chapter's data either ships with the package (the GPT-2 tokenizer files, Tiny Shakespeare, a 40-row
HellaSwag sample) or has a stand-in the chapter uses and names on its page (the sample instead of the full
HellaSwag file, random weights instead of OpenAI's). What has no stand-in is checked here, so a mistake stops
the build with one line and exit status 2 before any chapter has spent minutes:

- the scale asked for with GPT2LAB_SCALE exists (and `gpu` has a GPU);
- files named by the environment ($GPT2LAB_HELLASWAG, $GPT2LAB_GPT2_WEIGHTS) are there and are what they say;
- the packaged files are installed, the cache folder ($GPT2LAB_CACHE) can be written, and the modules the
  chapters import are installed.

    python -m gpt2lab.cli.precheck        # `make book` runs it first
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from importlib import resources

from gpt2lab.base.errors import UserError, one_line

PACKAGED = [("gpt2_bpe", "encoder.json"), ("gpt2_bpe", "vocab.bpe"), ("tinyshakespeare", "input.txt"),
            ("hellaswag", "hellaswag_val_sample.jsonl")]
# What the chapters import beyond torch (prepare reads the packaged corpus through `datasets`; chapters 2 and
# 12 compare against Hugging Face's GPT-2 class), and what builds the site.
MODULES = {"datasets": "chapters 1, 3, 11 and 13 prepare their shards with it",
           "transformers": "chapters 2 and 12 compare with Hugging Face's GPT-2",
           "matplotlib": "every chapter's figures", "jupyter_book": "it builds the site",
           "myst_nb": "it runs the chapters"}


def check() -> str:
    """One line describing what the build will use; raises UserError with one line for the first problem."""
    from gpt2lab.base.download import cache_dir
    from gpt2lab.lessons.scale import pick_scale
    from gpt2lab.run import hellaswag

    try:
        scale = pick_scale()
    except ValueError as e:
        raise UserError(str(e)) from None
    assets = resources.files("gpt2lab").joinpath("assets")
    missing = ["/".join(p) for p in PACKAGED if not assets.joinpath(*p).is_file()]
    if missing:
        raise UserError(f"gpt2lab is installed without its data files ({', '.join(missing)}): "
                        "reinstall it from the repository (make install)")
    absent = [f"{m} ({why})" for m, why in MODULES.items() if importlib.util.find_spec(m) is None]
    if absent:
        raise UserError(f"not installed: {'; '.join(absent)}: run make install")
    if os.environ.get(hellaswag.DATA_ENV):
        try:
            hellaswag.load_examples(limit=1)  # names the variable and the file when it is missing or not HellaSwag
        except (OSError, ValueError) as e:
            raise UserError(f"${hellaswag.DATA_ENV}: {e}") from None
        data = f"HellaSwag from ${hellaswag.DATA_ENV}"
    else:
        data = "HellaSwag downloaded if this machine can, else the packaged 40-row sample"
    from gpt2lab.engine.pretrained import local_weights

    local_weights()  # raises a UserError naming $GPT2LAB_GPT2_WEIGHTS when it is set to a wrong folder
    cache = cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache):
            pass
    except OSError as e:
        raise UserError(f"cannot write the cache folder {cache} (GPT2LAB_CACHE): {e.strerror or e}") from None
    return f"scale '{scale.name}' ({scale.reason}); {data}; cache {cache}"


def main(argv: list[str] | None = None) -> int:
    if argv:
        print(f"usage: python -m gpt2lab.cli.precheck (no arguments; got {' '.join(argv)})", file=sys.stderr)
        return 2
    try:
        print(f"gpt2lab book: ready: {check()}", flush=True)
    except UserError as e:
        print(f"gpt2lab book: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
