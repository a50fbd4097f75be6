"""Offline machines (a cluster's compute nodes): ask once, fast, whether the Hugging Face hub can be reached.

Unreachable, the hub libraries retry each request for ~30 s before falling back to their cache; the harness
switches them to cache-only mode instead, so a cached model loads at once and a missing one fails at once.
And where a hub model's files are, at one commit.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import getproxies, proxy_bypass


@functools.cache
def reachable(timeout: float = 3.0) -> bool:
    """False, and the hub libraries set to cache-only, when the hub's host cannot be connected to within `timeout`.
    Left alone: HF_HUB_OFFLINE already set, or a proxy for the hub's scheme that NO_PROXY does not bypass (it may
    reach what this machine cannot resolve)."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    proxies = getproxies()
    proxied = (proxies.get(url.scheme) or proxies.get("all")) and not proxy_bypass(url.hostname or "")
    if constants.HF_HUB_OFFLINE or proxied:
        return not constants.HF_HUB_OFFLINE
    address = (url.hostname or "", url.port or (80 if url.scheme == "http" else 443))
    answer = []

    def connect():  # in a thread: name resolution itself has no timeout
        try:
            socket.create_connection(address, timeout=timeout).close()
            answer.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout + 0.5)
    if answer:
        return True
    go_offline()
    logging.getLogger("harness").warning("the Hugging Face hub (%s) is unreachable from here: models and datasets come from "
                                         "the local cache only (HF_HUB_OFFLINE=1)", constants.ENDPOINT)
    return False


def go_offline() -> None:
    """What HF_HUB_OFFLINE=1 at start-up sets, set now (each library read it into a constant when imported)."""
    import datasets.config
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True


# The files a model loads from (config, weights, tokenizer, chat template, remote code), not the other formats some
# repositories also hold (Llama's original/, Mistral's consolidated weights, GGUF, ONNX): a 7B model twice over.
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py", "*.tiktoken"]
OTHER_FORMATS = ["original/*", "consolidated*", "*.gguf", "onnx/*"]


def snapshot(repo: str, revision: str | None, weights: bool = True) -> Path:
    """A hub model's files at one commit, in the local cache (downloaded if need be): at the hub's newest (the cache's
    when offline) without a revision, else at that commit, branch or tag (`commit_named` first). Every load of a run
    reads this folder, so the run uses one commit throughout, and its name (snapshots/<commit>) is the commit the run
    records. `weights=False`: all but the weights."""
    from huggingface_hub import snapshot_download

    files = MODEL_FILES if weights else [p for p in MODEL_FILES if p != "*.safetensors"]
    folder = Path(snapshot_download(repo, revision=revision, allow_patterns=files, ignore_patterns=OTHER_FORMATS))
    if weights and not any(folder.glob("*.safetensors")):  # an older model's PyTorch weights
        folder = Path(snapshot_download(repo, revision=folder.name, allow_patterns=[*MODEL_FILES, "*.bin"], ignore_patterns=OTHER_FORMATS))
    return folder


def cached_commits(repo: str) -> list[str]:
    """The commits of a hub model the local cache holds a snapshot of."""
    snapshots = _cached(repo) / "snapshots"
    return sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []


def commit_named(repo: str, revision: str) -> str:
    """A revision as the hub takes it: a commit's first characters (7 or more, as the report prints them, any case)
    expanded to the one cached commit they begin, unless the cache knows a branch or tag of that name."""
    if not re.fullmatch(r"[0-9a-fA-F]{7,40}", revision) or (_cached(repo) / "refs" / revision).is_file():
        return revision
    matches = [c for c in cached_commits(repo) if c.startswith(revision.lower())]
    if len(matches) > 1:
        raise ValueError(f"{revision} begins {len(matches)} cached commits ({', '.join(matches)}): give more of it")
    return matches[0] if matches else revision


def _cached(repo: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
