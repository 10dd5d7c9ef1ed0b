"""One adapter per final model, on the original base: what lets one vLLM instance serve SP, RG and VM.

`ipm train` merges each SFT LoRA into a full checkpoint (the DPO start and reference) and trains the DPO LoRA on
that; so the final SP, RG and VM models have three different bases. But the merged SFT model is the base plus the
SFT update, so the final model is base + ΔW_sft + ΔW_dpo, and both updates are low-rank: stacking the two
factors (A = [A_sft; A_dpo], B = [B_sft, B_dpo], each with its own scale) is one adapter of rank r_sft + r_dpo on
the original base, exactly (peft's ``add_weighted_adapter(..., combination_type="cat")``). The export checks that
claim on the logits of a few prompts against the merged model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHECK_PROMPTS = ("seeker: I lost my job last week and I cannot sleep.",
                 "seeker: My sister stopped talking to me.\nsupporter: That sounds painful.\nseeker: It is.")


def export_final_adapter(base: str, sft_adapter: str | Path, dpo_adapter: str | Path, target: str | Path,
                         sft_merged: str | Path | None = None, dtype: str = "float32") -> dict:
    """Write ``target``: one LoRA adapter on ``base`` equal to SFT then DPO. With ``sft_merged`` (the merged SFT
    checkpoint the DPO adapter was trained on), compare logits: base + final vs sft_merged + dpo."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dt = getattr(torch, dtype)
    target = Path(target)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dt)
    peft = PeftModel.from_pretrained(model, str(sft_adapter), adapter_name="sft")
    peft.load_adapter(str(dpo_adapter), adapter_name="dpo")
    peft.add_weighted_adapter(["sft", "dpo"], [1.0, 1.0], "final", combination_type="cat")
    peft.set_adapter("final")
    peft.delete_adapter("sft")
    peft.delete_adapter("dpo")
    peft.eval()  # the new adapter's dropout layers are created in training mode: the check must not drop anything
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    peft.save_pretrained(str(tmp), selected_adapters=["final"], safe_serialization=True)
    saved = tmp / "final" if (tmp / "final" / "adapter_config.json").is_file() else tmp
    config_path = saved / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = str(base)
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(str(sft_merged or base))
    tok.save_pretrained(str(saved))
    shutil.rmtree(target, ignore_errors=True)
    saved.replace(target)
    shutil.rmtree(tmp, ignore_errors=True)
    result = {"checkpoint": str(target), "rank": int(config["r"]), "base": str(base)}
    if sft_merged is not None:
        result["max_abs_logit_diff"] = _logit_gap(peft, str(sft_merged), str(dpo_adapter), tok, dt)
    del peft, model
    return result


def _logit_gap(final, sft_merged: str, dpo_adapter: str, tok, dt) -> float:
    """Largest |logit difference| over the check prompts between base + final and merged SFT + DPO."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_merged, dtype=dt), dpo_adapter)
    reference.eval()
    gap = 0.0
    with torch.no_grad():
        for text in CHECK_PROMPTS:
            ids = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                          add_generation_prompt=True, return_tensors="pt", return_dict=True)
            a = final(**ids).logits.float()
            b = reference(**ids).logits.float()
            gap = max(gap, float((a - b).abs().max()))
    del reference
    return gap
