"""A generated block of the README: the text between a begin and an end marker, replaced whole."""

from __future__ import annotations

from pathlib import Path

from lcc_lens.atomic import write_text

README = Path(__file__).resolve().parents[1] / "README.md"


def current_block(readme: Path, begin: str, end: str) -> str | None:
    """The block (markers included) as the README holds it now; None when a marker is absent."""
    text = readme.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return None
    return begin + text.split(begin, 1)[1].split(end, 1)[0] + end


def update_block(readme: Path, begin: str, end: str, block: str) -> bool:
    """Replace the README's block between ``begin`` and ``end`` by ``block`` (markers included);
    False, and nothing written, when the markers are absent."""
    text = readme.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    write_text(readme, head + block + tail)
    return True
