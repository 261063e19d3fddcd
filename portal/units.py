"""Sizes with units, written once for every door (pages, admin, Slack, CLI)."""

from __future__ import annotations


def _trim(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def mib(value: int | float | str | None) -> str:
    """512 → '512 MiB', 2048 → '2 GiB', 1536 → '1.5 GiB'; '' for what is not a number."""
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    if number >= 1024:
        return f"{_trim(number / 1024)} GiB"
    return f"{number} MiB"


def gib(value: int | str | None) -> str:
    """4 → '4 GiB'."""
    try:
        return f"{int(value)} GiB"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def filesize(value: int | float | str | None) -> str:
    """Bytes in binary units: 67108864 → '64 MiB'."""
    try:
        size = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{_trim(size)} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return ""
