"""The field's measuring stick (METHOD.md section 4): strategy metrics (Q, weighted F1, preference p, bias B),
reference metrics (BLEU, Distinct, ROUGE-L, F1, length), an optional LLM judge, and reports."""
