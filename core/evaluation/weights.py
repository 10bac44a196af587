"""Finding CLIP weights without hanging: local files, ``local-dir:`` folders, the Hugging
Face cache, and a fast, clear failure when they are not here and the Hub is unreachable.

huggingface_hub retries an unreachable Hub for about 47 s unless ``HF_HUB_OFFLINE=1``, and
reads that variable once, when it is first imported. So the evaluation process probes the
Hub (a TCP connect with a deadline, :func:`prepare_hub_env`) *before* it imports
open_clip, and sets ``HF_HUB_OFFLINE=1`` when the Hub cannot be reached. Weights found in
the cache are then handed to open_clip as a file, so no download is ever attempted for
them. This module imports nothing heavy at import time; :func:`resolve_weights` imports
open_clip when called.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loradeck.core.evaluation.errors import WeightsUnavailableError

PROBE_TIMEOUT = 3.0
"""Seconds the Hub probe may take, DNS included."""
RANDOM_WEIGHTS = ("", "none", "random")
"""``clip_pretrained`` values that mean no weights (random initialisation, for tests)."""
_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_DEFAULT_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_address(environ: MutableMapping[str, str] | None = None) -> tuple[str, int]:
    """The host and port a download would connect to: an HTTPS proxy if one is set, else
    ``$HF_ENDPOINT`` (default https://huggingface.co)."""
    env = os.environ if environ is None else environ
    proxy = env.get("HTTPS_PROXY") or env.get("https_proxy")
    parsed = urlparse(proxy or env.get("HF_ENDPOINT") or "https://huggingface.co")
    default_port = 443 if parsed.scheme == "https" else 80
    return parsed.hostname or "huggingface.co", parsed.port or default_port


def hub_reachable(
    timeout: float = PROBE_TIMEOUT, environ: MutableMapping[str, str] | None = None
) -> bool:
    """Whether a TCP connection to the Hub (or the proxy) opens within ``timeout``.

    Runs in a daemon thread because name resolution ignores socket timeouts."""
    host, port = hub_address(environ)
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=attempt, name="loradeck-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(outcome and outcome[0])


def needs_hub(model: str, pretrained: str) -> bool:
    """Whether these settings name weights that may have to come from the Hub."""
    if model.startswith("local-dir:"):
        return False
    if model.startswith("hf-hub:"):
        return True
    text = pretrained.strip()
    return text.lower() not in RANDOM_WEIGHTS and not _looks_like_path(text)


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.lower().endswith(_CHECKPOINT_SUFFIXES)


def prepare_hub_env(
    model: str, pretrained: str, environ: MutableMapping[str, str] | None = None
) -> bool:
    """Probe the Hub if these weights may need it; set ``HF_HUB_OFFLINE=1`` when it is
    unreachable. Returns whether downloads are possible. Call it before importing open_clip
    or huggingface_hub in this process."""
    env = os.environ if environ is None else environ
    if _truthy(env.get("HF_HUB_OFFLINE")) or _truthy(env.get("TRANSFORMERS_OFFLINE")):
        return False
    if not needs_hub(model, pretrained):
        return True
    if hub_reachable(environ=env):
        return True
    env["HF_HUB_OFFLINE"] = "1"
    return False


@dataclass(frozen=True)
class ResolvedWeights:
    """What to hand open_clip's ``create_model``."""

    model_name: str
    pretrained: str | None
    force_quick_gelu: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _cached_hf_file(repo: str, filenames: tuple[str, ...]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        found = try_to_load_from_cache(repo_id=repo, filename=name)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _offline_message(what: str, repo: str | None, filename: str | None, host: str) -> str:
    lines = [
        f"{what} are not on this machine and {host} cannot be reached (offline), "
        "so the metrics that need CLIP (clip_score, fid, consistency) are unavailable; "
        "sharpness, artifacts and val_loss are still computed.",
        "To get them, on a machine with internet:",
    ]
    if repo:
        lines.append(f"    hf download {repo} {filename or ''}".rstrip())
        folder = "models--" + repo.replace("/", "--")
        lines.append(
            f"  then copy the folder {folder} of that machine's Hugging Face cache into "
            f"this machine's cache, {_hf_cache_dir()}"
        )
    lines.append(
        "  or put the weights file anywhere here and set "
        'evaluation.clip_pretrained = "/path/to/file.safetensors" (or .bin)'
    )
    lines.append(
        '  or set evaluation.clip_model = "local-dir:/path/to/folder" (a folder with '
        "open_clip_config.json and the weights)."
    )
    return "\n".join(lines)


def _resolve_hf_hub(model: str, *, online: bool, host: str) -> ResolvedWeights:
    repo = model.removeprefix("hf-hub:")
    config = _cached_hf_file(repo, ("open_clip_config.json",))
    weights = _cached_hf_file(repo, _DEFAULT_HF_FILES)
    if config and weights and Path(config).parent == Path(weights).parent:
        # Both cached in one snapshot folder: load it as a local folder, no Hub call.
        return ResolvedWeights(f"local-dir:{Path(config).parent}", None, description=model)
    if online:
        return ResolvedWeights(model, None, description=model)
    raise WeightsUnavailableError(_offline_message(f"CLIP weights {model}", repo, None, host))


def resolve_weights(model: str, pretrained: str, *, online: bool) -> ResolvedWeights:
    """Where the weights for ``model``/``pretrained`` are, without downloading anything.

    Raises :class:`WeightsUnavailableError` when they are not here and ``online`` is
    False, or when the names are wrong; the message says what to do."""
    import open_clip

    host = hub_address()[0]
    if model.startswith("local-dir:"):
        folder = Path(model.removeprefix("local-dir:")).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise WeightsUnavailableError(
                f"evaluation.clip_model = {model!r}: {folder} has no open_clip_config.json; "
                "a local-dir: folder needs open_clip_config.json and the weights file"
            )
        return ResolvedWeights(f"local-dir:{folder}", None, description=str(folder))
    if model.startswith("hf-hub:"):
        return _resolve_hf_hub(model, online=online, host=host)
    if model not in open_clip.list_models():
        raise WeightsUnavailableError(
            f"evaluation.clip_model = {model!r} is not an open_clip model; use one of "
            "open_clip.list_models() (e.g. ViT-B-32), hf-hub:ORG/REPO or local-dir:/path"
        )
    text = pretrained.strip()
    if text.lower() in RANDOM_WEIGHTS:
        return ResolvedWeights(model, None, description="random weights: scores mean nothing")
    if _looks_like_path(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"evaluation.clip_pretrained = {text!r}: no such file; give the path of a "
                ".safetensors or .bin open_clip checkpoint"
            )
        return ResolvedWeights(model, str(path), description=str(path))
    tag_cfg: dict[str, Any] = open_clip.get_pretrained_cfg(model, text) or {}
    if not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise WeightsUnavailableError(
            f"evaluation.clip_pretrained = {text!r} is not a pretrained tag of {model} "
            f"(known: {tags}) nor a file path"
        )
    preprocess: dict[str, Any] = {
        key: tag_cfg[key]
        for key in ("mean", "std", "interpolation", "resize_mode", "fill_color")
        if key in tag_cfg
    }
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    repo: str | None = None
    filename: str | None = None
    cached: str | None = None
    if hub_id := tag_cfg.get("hf_hub"):
        # open_clip's convention: "org/repo/" means the repo's default weights file.
        repo, filename = os.path.split(str(hub_id))
        names = (filename,) if filename else _DEFAULT_HF_FILES
        if filename and filename.endswith((".bin", ".pth")):
            names = (filename.rsplit(".", 1)[0] + ".safetensors", filename)
        cached = _cached_hf_file(repo, names)
    if cached is None and (url := tag_cfg.get("url")):
        candidate = Path("~/.cache/clip").expanduser() / os.path.basename(str(url))
        cached = str(candidate) if candidate.is_file() else None
    description = f"{model}/{text}"
    if cached is not None:
        return ResolvedWeights(model, cached, quick_gelu, preprocess, f"{description} ({cached})")
    if online:
        return ResolvedWeights(model, text, quick_gelu, preprocess, description)
    raise WeightsUnavailableError(
        _offline_message(
            f"CLIP weights {description}", repo, filename or _DEFAULT_HF_FILES[0], host
        )
    )
