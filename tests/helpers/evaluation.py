"""Helpers of the evaluation tests (tests/evaluation/)."""

TURNS = 4  # the test turns `ipm infer` answers in the end-to-end tests (test_eval_e2e.py)
