"""Small text corpora that ship with the package, loadable by name."""

from __future__ import annotations

from importlib import resources

# name -> (asset path, provenance). Tiny Shakespeare is the corpus the video debugs on.
CORPORA = {
    "tinyshakespeare": (
        ("tinyshakespeare", "input.txt"),
        "karpathy/char-rnn data/tinyshakespeare/input.txt @6f9487a (public domain text)",
    ),
}


def load_text(name: str = "tinyshakespeare") -> str:
    """The full text of a packaged corpus."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; available: {', '.join(sorted(CORPORA))}")
    parts, _ = CORPORA[name]
    return resources.files("gpt2lab").joinpath("assets", *parts).read_text(encoding="utf-8")


def corpus_path(name: str = "tinyshakespeare") -> str:
    """Filesystem path of a packaged corpus (for tools that want a file, like `prepare`)."""
    load_text(name)  # validates the name
    parts, _ = CORPORA[name]
    return str(resources.files("gpt2lab").joinpath("assets", *parts))
