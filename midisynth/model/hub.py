"""Models on the Hugging Face hub: `owner/name[@revision]` ids resolved in the standard cache, downloads, listing.

Everything goes through huggingface_hub and its cache (`HF_HUB_CACHE`, default `$HF_HOME/hub`, default
`~/.cache/huggingface/hub`), so a checkpoint fetched by diffusers is found here and the other way round.
Resolving an id never touches the network: `midisynth download ID` fetches it once (only the files midisynth
reads); `HF_HUB_OFFLINE=1` refuses downloads. This module does not import torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from midisynth.constants import DIFFUSERS_MODULES
from midisynth.extras import import_extra

OFFICIAL_MODEL = "google/music-spectrogram-diffusion"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")  # preferred first
_OPTIONAL_FILES = ("model_index.json", "scheduler/scheduler_config.json")
_VOCODER_FOLDER = "melgan/"


class HubError(ValueError):
    """A hub id that cannot be resolved or fetched; the message is one line and says what to do."""


@dataclass(frozen=True)
class HubId:
    repo_id: str  # owner/name
    revision: str | None = None  # branch, tag or commit; None: the default branch

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class CachedModel:
    """One cached revision of a repository with the Spectrogram Diffusion layout."""

    repo_id: str
    commit: str
    refs: tuple[str, ...]  # branches and tags pointing at the commit, e.g. ('main',)
    size_bytes: int  # on disk, files of this revision only
    path: Path  # the snapshot directory (a diffusers-layout checkpoint)


def parse_hub_id(text: str) -> HubId | None:
    """'owner/name' or 'owner/name@revision' -> HubId; None for anything shaped like a file path instead."""
    repo_id, _, revision = text.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or repo_id.endswith(".safetensors") or "@" in revision:
        return None
    return HubId(repo_id, revision or None)


def require_huggingface_hub() -> None:
    """Raise ImportError naming the `hub` extra when huggingface_hub is not installed."""
    import_extra("huggingface_hub", "hub", "a hub id")


def cache_dir() -> Path:
    """The Hugging Face hub cache in use (HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    require_huggingface_hub()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(hub_id: HubId) -> Path:
    """The local snapshot directory of a cached hub checkpoint; HubError naming `midisynth download` if absent."""
    require_huggingface_hub()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id.repo_id, revision=hub_id.revision, local_files_only=True))
    except LocalEntryNotFoundError:
        raise HubError(
            f"{hub_id}: no such local path, and not in the Hugging Face cache ({cache_dir()}); "
            f"fetch it with `midisynth download {hub_id}`"
        ) from None
    except HFValidationError as err:
        raise HubError(f"{hub_id}: not a valid hub id ({err})") from None


def files_to_fetch(repo_files: list[str], hub_id: HubId) -> list[str]:
    """The files of a hub repository that midisynth reads: per module its config and one weight file
    (safetensors when the repository has it, else pickle .bin), the scheduler config, and the melgan/ vocoder."""
    available = set(repo_files)
    wanted = [name for name in _OPTIONAL_FILES if name in available]
    for module in DIFFUSERS_MODULES:
        config = f"{module}/config.json"
        weights = [f"{module}/{name}" for name in _WEIGHT_FILES if f"{module}/{name}" in available]
        if config not in available or not weights:
            raise HubError(
                f"{hub_id}: not a Spectrogram Diffusion checkpoint (no {module}/config.json with "
                f"{' or '.join(_WEIGHT_FILES)})"
            )
        wanted += [config, weights[0]]
    return wanted + sorted(name for name in repo_files if name.startswith(_VOCODER_FOLDER))


def requested_hub_id(text: str, revision: str | None = None) -> HubId:
    """The hub id `text` (owner/name[@revision]) at `revision` when given; ValueError (not a HubError) for text that
    is not a hub id, or that names another revision."""
    hub_id = parse_hub_id(text)
    if hub_id is None or revision and hub_id.revision not in (None, revision):
        raise ValueError(f"{text}: expected a hub id owner/name[@revision] (and no second, different --revision)")
    return replace(hub_id, revision=revision or hub_id.revision)


def download(hub_id: HubId) -> Path:
    """Fetch the checkpoint's needed files into the Hugging Face cache; returns the snapshot directory."""
    require_huggingface_hub()
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if constants.HF_HUB_OFFLINE:
        raise HubError(f"cannot download {hub_id}: HF_HUB_OFFLINE is set (unset it on a machine with network access)")
    try:
        repo_files = HfApi().list_repo_files(hub_id.repo_id, revision=hub_id.revision)
        wanted = files_to_fetch(repo_files, hub_id)
        return Path(snapshot_download(hub_id.repo_id, revision=hub_id.revision, allow_patterns=wanted))
    except RevisionNotFoundError:
        raise HubError(f"{hub_id}: the repository has no revision {hub_id.revision!r}") from None
    except RepositoryNotFoundError:
        raise HubError(f"{hub_id}: no such model repository on the hub (or it is private: `hf auth login`)") from None
    except HfHubHTTPError as err:
        raise HubError(f"cannot download {hub_id}: {str(err).strip().splitlines()[0]}") from None
    except _connection_errors() as err:
        if isinstance(err, OSError) and err.strerror:  # a full disk; connection failures (requests') have none
            raise HubError(f"cannot download {hub_id}: {err.strerror}") from None
        raise HubError(
            f"cannot download {hub_id}: the hub ({constants.ENDPOINT}) cannot be reached (no network?); "
            "to use a checkpoint on disk, give its directory (diffusers layout) or .safetensors file: "
            "midisynth render --model DIR ..."
        ) from None


def _connection_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub raises when the hub cannot be reached: requests' errors (OSErrors) before version 1.0,
    httpx's transport errors (connection, time-out, protocol) from 1.0, when httpx is installed."""
    try:
        import httpx
    except ImportError:
        return (OSError,)
    return (OSError, httpx.TransportError)


def cached_models() -> list[CachedModel]:
    """Revisions in the Hugging Face cache that hold a Spectrogram Diffusion checkpoint (diffusers layout)."""
    require_huggingface_hub()
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(cache_dir())
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            path = Path(revision.snapshot_path)
            if all((path / module / "config.json").is_file() for module in DIFFUSERS_MODULES):
                found.append(
                    CachedModel(
                        repo.repo_id, revision.commit_hash, tuple(sorted(revision.refs)), revision.size_on_disk, path
                    )
                )
    return found
