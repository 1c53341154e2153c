"""Which names travel with a file: its metadata sidecar (`clip.mov.json`) and its ready
marker (`clip.mov.done`). Names only, no I/O: intake ignores them as uploads of their own,
the S3 stage sends the sidecar along, and post-actions move or delete them with the file."""

from __future__ import annotations

SIDECAR_SUFFIX = ".json"


def sidecar_owner(name: str) -> str | None:
    """The file name `name` would be the metadata sidecar of: `x.y` for `x.y.json`.

    A name only: it is a sidecar when that file exists beside it (watch.is_sidecar);
    otherwise it is an ordinary file.
    """
    owner = name.removesuffix(SIDECAR_SUFFIX)
    return owner if owner != name and "." in owner.lstrip(".") else None


def sidecar_name(name: str) -> str:
    return name + SIDECAR_SUFFIX


def marker_owner(name: str, marker: str) -> str | None:
    """The file name a ready marker `name` stands for (`clip.mov` for `clip.mov.done`)."""
    return name[: -len(marker)] if marker and name.endswith(marker) and len(name) > len(marker) else None


def companion_names(name: str, marker: str) -> list[str]:
    """The names that travel with file `name` when it is archived, deleted or failed."""
    return [sidecar_name(name), *([name + marker] if marker else [])]
