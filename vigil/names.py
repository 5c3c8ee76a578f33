"""What every model module shares: the refusal every spec raises, and valid names."""
from __future__ import annotations

import re


class SpecError(ValueError):
    """A spec or request that vigil refuses; the message is shown to the user as is."""


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError(
            f"invalid {kind} name {name!r}: use 1-63 lower-case letters, digits, '.', '_' or '-'"
        )
    return name
