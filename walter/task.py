"""Walter's task: the prompt for one article."""

from __future__ import annotations

from .reward import ASK


def build_prompt(title: str, description: str | None = None) -> str:
    """The article's title and description from its link card, then a one-line ask."""
    parts = [f"Article: {title.strip()}"]
    if description and description.strip():
        parts.append(description.strip())
    parts.append("")
    parts.append(ASK)
    return "\n".join(parts)
