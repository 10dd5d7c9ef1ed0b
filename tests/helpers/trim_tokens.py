"""Helpers of tests/test_trim_tokens.py."""

N = 600  # the --trim-tokens bound of the trimmed build
