"""Licences and citations: the code's licence agrees with pyproject, CITATION.cff is valid, every model and data set is cited."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_code_licence_agrees_with_pyproject_and_citation_file() -> None:
    declared = re.search(r'^license = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)  # no tomllib on 3.10
    assert declared == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == declared
    assert {"title", "authors", "message", "version"} <= set(citation)
    assert "creativecommons.org/licenses/by/4.0" in (ROOT / "LICENSE-CONTENT.md").read_text()


def test_every_model_and_data_set_is_listed_with_a_bibliography_entry() -> None:
    page = (ROOT / "book" / "models-and-data.md").read_text()
    for name in ("Gemma 3", "Gemma Terms of Use", "SmolLM2", "IMDB", "Rotten Tomatoes", "Bible",
                 "Universal Sentence Encoder", "FLORES+", "UltraFeedback"):
        assert name in page, f"{name} is missing from the models-and-data page"
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(), re.M))
    cited = set(re.findall(r"\{cite:[tp]\}`([^`]+)`", page))
    assert len(cited) >= 8 and cited <= keys, cited - keys
