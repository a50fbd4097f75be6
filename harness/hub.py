"""Offline machines (a cluster's compute nodes): ask once, fast, whether the Hugging Face hub can be reached.

Unreachable, the hub libraries retry each request for ~30 s before falling back to their cache; the harness
switches them to cache-only mode instead, so a cached model loads at once and a missing one fails at once.
And which commit of a hub model a run used.
"""

from __future__ import annotations

import functools
import logging
import os
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


def revision(model: str) -> str | None:
    """The commit a hub model's files come from: the cache snapshot its config.json is read from (the hub's newest
    when reachable, else the cache's). Recorded with a run, so that a model updated on the hub is a different base,
    not a silent change under the same name. None when there is no such snapshot."""
    from huggingface_hub import hf_hub_download

    try:
        snapshot = Path(hf_hub_download(model, "config.json")).parent
    except (OSError, ValueError):  # the hub's errors are OSErrors; check_model read this config already
        return None
    return snapshot.name if snapshot.parent.name == "snapshots" else None
