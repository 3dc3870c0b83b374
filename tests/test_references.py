"""The bibliography: the papers' metadata as published, entry types that match the venue, every cited key present."""

import json
import re
from pathlib import Path

from pybtex.database import parse_file

from companion.publish.claims import PAPERS

BOOK = Path(__file__).resolve().parents[1] / "book"
BIB = parse_file(str(BOOK / "references.bib")).entries

# As listed by the ACL Anthology (2025.acl-long.118 and 2024.findings-emnlp.940).
AUTHORS = {
    "sundar2025steering": ["Anirudh Sundar", "Sinead Williamson", "Katherine Metcalf", "Barry-John Theobald",
                           "Skyler Seto", "Masha Fedzechkina"],
    "lin2024limited": ["Yong Lin", "Skyler Seto", "Maartje Ter Hoeve", "Katherine Metcalf", "Barry-John Theobald",
                       "Xuan Wang", "Yizhe Zhang", "Chen Huang", "Tong Zhang"],
}
TITLES = {
    "sundar2025steering": "Steering into New Embedding Spaces: Analyzing Cross-Lingual Alignment Induced by Model "
                          "Interventions in Multilingual Language Models",
    "lin2024limited": "On the Limited Generalization Capability of the Implicit Reward Model Induced by Direct "
                      "Preference Optimization",
}
VENUES = {
    "sundar2025steering": "Proceedings of the 63rd Annual Meeting of the Association for Computational Linguistics "
                          "(Volume 1: Long Papers)",
    "lin2024limited": "Findings of the Association for Computational Linguistics: EMNLP 2024",
}


def names(key: str) -> list[str]:
    """The authors of an entry as 'First Last'."""
    return [" ".join(person.first_names + person.middle_names + person.prelast_names + person.last_names)
            for person in BIB[key].persons["author"]]


def test_the_papers_authors_and_venues_are_the_published_ones() -> None:
    intro = " ".join((BOOK / "intro.md").read_text(encoding="utf-8").split())
    for key, authors in AUTHORS.items():
        assert names(key) == authors
        assert BIB[key].fields["title"].strip("{}") == TITLES[key]
        assert BIB[key].type == "inproceedings" and BIB[key].fields["booktitle"] == VENUES[key]
        assert ", ".join(authors[:-1]) + " and " + authors[-1] in intro
        assert VENUES[key] in intro
    assert BIB["sundar2025steering"].fields["doi"] == "10.18653/v1/2025.acl-long.118"


def test_entry_types_match_where_each_work_appeared() -> None:
    for key, entry in BIB.items():
        if "eprint" in entry.fields and entry.type == "misc":
            assert entry.fields["archivePrefix"] == "arXiv", key
        assert entry.type != "article" or "journal" in entry.fields and "arXiv" not in entry.fields["journal"], key
        assert "arXiv" not in entry.fields.get("booktitle", ""), key


def notebook_markdown() -> list[str]:
    """The markdown cells of the committed notebooks (their prose cites too)."""
    notebooks = sorted((BOOK.parent / "notebooks").rglob("*.ipynb"))
    return ["".join(cell["source"]) for path in notebooks for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]
            if cell["cell_type"] == "markdown"]


def test_every_cited_key_is_in_the_bibliography() -> None:
    pages = [p.read_text(encoding="utf-8") for p in BOOK.rglob("*.md") if "_generated" not in p.parts]
    source = (Path(__file__).resolve().parents[1] / "src" / "companion" / "publish" / "paper_claims.py").read_text()
    cited = {key.strip() for text in pages + [source] + notebook_markdown()
             for keys in re.findall(r"\{cite:[pt]\}`([^`]+)`", text) for key in keys.split(",")}
    assert cited | set(PAPERS.values()) <= set(BIB)
    assert {"sundar2025steering", "kojima2024multilingual", "suau2020finding"} <= cited


def test_the_steering_pages_cite_with_roles_not_plain_text() -> None:
    plain = [text for text in notebook_markdown() if re.search(r"(Sundar|Kojima|Suau) et al\.", text)]
    assert not plain, plain
