"""The `knowledge` config section (where bases live, how documents are chunked, the embeddings endpoint)
and the retrieval settings a persona or scenario carries when it names a knowledge base."""

from __future__ import annotations

import typing as tp

import pydantic

from plexray.config import StrictModel
from plexray.openai_compat import EndpointConfig

RetrievalMode = tp.Literal["lexical", "dense"]


class EmbeddingsConfig(EndpointConfig):
    """An OpenAI-compatible embeddings endpoint (vLLM, TEI, OpenAI, ...): only needed for dense retrieval."""

    base_url: str | None = pydantic.Field(
        None, description="e.g. http://host:8000/v1; default: $PLEXRAY_EMBEDDINGS_BASE_URL")
    api_key_env: str = pydantic.Field("PLEXRAY_EMBEDDINGS_API_KEY", description="environment variable holding the key")
    model: str = "text-embedding-3-small"
    batch_size: int = pydantic.Field(64, ge=1, description="texts per request")


class ChunkingConfig(StrictModel):
    max_words: int = pydantic.Field(
        80, ge=10, le=2000, description="words per passage at most (a passage is what joins a prompt: keep it "
                                        "well under a persona's max_tokens)")
    overlap_words: int = pydantic.Field(
        0, ge=0, description="words repeated from the end of a passage at the start of the next, when a long "
                             "paragraph is split")

    @pydantic.model_validator(mode="after")
    def _overlap_below_size(self) -> "ChunkingConfig":
        if self.overlap_words >= self.max_words:
            raise ValueError(f"overlap_words ({self.overlap_words}) must be below max_words ({self.max_words})")
        return self


class KnowledgeConfig(StrictModel):
    root: str = pydantic.Field(
        "artifacts/knowledge", description="where knowledge bases live, one directory per name: a local path or a "
                                           "pyarrow/fsspec URI (s3://..., gs://...) that replicas and workers can read")
    cache_dir: str = pydantic.Field(
        "~/.cache/plexray/knowledge", description="local copies of bases under a remote root")
    chunking: ChunkingConfig = ChunkingConfig()
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    index_workers: int = pydantic.Field(2, ge=1, description="Ray Data tasks reading and chunking documents at once")
    max_context_chars: int = pydantic.Field(
        500, ge=1, description="longest retrieval query (`context` parameter) a caller may send; longer is refused")


class KnowledgeSettings(StrictModel):
    """A persona's (or scenario's) knowledge base and how much of it joins the prompt."""

    base: str = pydantic.Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="knowledge base name (under "
                                                                                     "knowledge.root)")
    top_k: int = pydantic.Field(3, ge=1, le=50, description="passages retrieved")
    max_tokens: int = pydantic.Field(
        160, ge=8, le=2000, description="token budget of the passages section of the prompt (model text tokens; "
                                        "each is one 80 ms prefill frame); passages beyond it are left out")
    mode: RetrievalMode = pydantic.Field("lexical", description="lexical (BM25) or dense (needs a base indexed "
                                                                "with --dense)")
    query: str | None = pydantic.Field(
        None, description="default retrieval query when the caller sends no `context` (serving) and the query of "
                          "every conversation (data; default: the scenario's situation)")
