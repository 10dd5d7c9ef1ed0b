"""Inferential Preference Mining and the judge filter (METHOD.md section 3): the pairs of a build.

- ``policy``: what the policy is asked for each supporter turn, and the pair (or the reason there is none) its
  answer makes; the pairs a source holds itself (ESC-Pro). Pure functions.
- ``judge``: the judge's request for a response-level pair and its verdict on it. Pure functions.
- ``plan``: the requests of a build per task and the engines that answer them, shared by mining and ``--dry-run``.
- ``run``: the policy over every supporter turn of the mined splits, then the judge over the pairs; the dry run.
"""
