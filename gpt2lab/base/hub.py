"""Can this process use the Hugging Face hub now? One answer for every command that would download from it.

The hub's clients retry for tens of seconds before they give up, so a command that needs the hub (GPT-2's
weights, a streamed dataset) asks here first and, offline, says so in one line at once. The answer is:

- offline, when the environment asks for it: any of HF_HUB_OFFLINE, HF_DATASETS_OFFLINE or TRANSFORMERS_OFFLINE
  set to 1/on/yes/true (read on every call, so a variable set later counts);
- otherwise one TCP connection to the hub's host (HF_ENDPOINT, if set), or to the HTTPS proxy when one is set
  (what the clients would connect to), opened in a thread so that neither a slow DNS lookup nor a dropped
  packet holds us longer than about `timeout` seconds. That probe runs once per process.
"""

from __future__ import annotations

import functools
import os
import threading

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 1.5


def offline_asked() -> str | None:
    """The environment variable that asks for offline mode, as `VAR=value asks for offline mode`, or None."""
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in ("1", "on", "yes", "true"):
            return f"{var}={os.environ[var]} asks for offline mode"
    return None


def hub_status(timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, why): the environment's offline switch, else the outcome of this process's one probe."""
    asked = offline_asked()
    if asked:
        return False, asked
    return _probe(os.environ.get("HF_ENDPOINT") or ENDPOINT, timeout)


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be used now, or None when it can (`hub_status` as one optional line)."""
    reachable, why = hub_status(timeout)
    return None if reachable else why


@functools.lru_cache(maxsize=4)
def _probe(url: str, timeout: float) -> tuple[bool, str]:
    from gpt2lab.base.download import unreachable

    outcome: list[str | None] = []

    def probe() -> None:
        try:
            outcome.append(unreachable(url, timeout=timeout))
        except Exception as e:  # e.g. sockets forbidden (tests), a malformed proxy setting
            outcome.append(f"cannot reach {url} ({type(e).__name__}: {e})")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not outcome:
        return False, f"no answer from {url} within {timeout:.1f} s"
    if outcome[0]:
        return False, outcome[0]
    return True, f"{url} reachable"


def forget() -> None:
    """Forget the probe's outcome (tests; a process whose network changed)."""
    _probe.cache_clear()
