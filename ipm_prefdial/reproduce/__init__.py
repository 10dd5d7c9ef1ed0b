"""``ipm reproduce``: the paper's loop (SFT data, SFT, mining with the SFT models, judge, DPO, inference,
evaluation with intervals) as one resumable command."""
