"""Stories shown as formatted text keep only headings, lists and bold; links, images, HTML and icons stay text."""

from __future__ import annotations

import pytest

from storyteller_ui.story_view import safe_markdown


def test_structure_is_kept() -> None:
    shown = safe_markdown("## Title\n\n**People:** Ann\n- 00:12 a door opens\n1. first")
    assert shown.splitlines() == ["#### Title", "", "**People\\:** Ann  ", "- 00\\:12 a door opens", "1. first"]


@pytest.mark.parametrize(
    "hostile",
    [
        "[x](https://evil.example)",
        "![i](https://evil.example/p.png)",
        "<img src=x>",
        ":material/home:",
        "$x^2$",
        "<https://evil.example>",
        "**[x](https://e.example)**",
    ],
)
def test_links_images_html_icons_and_maths_stay_text(hostile: str) -> None:
    shown = safe_markdown(f"## {hostile}\n- {hostile}\n{hostile}")
    for line in shown.splitlines():
        body = line.lstrip("#- ").replace("**", "")
        assert "](" not in body and "<" not in body.replace("\\<", "") and ":material" not in body.replace("\\:", "")


def test_an_unpaired_double_star_is_text() -> None:
    assert safe_markdown("a **b") == "a \\*\\*b  "
