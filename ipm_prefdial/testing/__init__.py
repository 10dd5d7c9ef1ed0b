"""What the test suite and the benchmarks use, shipped so that users can use it too.

``fake_llm``: a deterministic OpenAI-compatible chat server (no model, no GPU). Every answer is a pure function of
the request, so a whole build against it is byte-identical from run to run and takes seconds: for trying options,
testing a pipeline change, or measuring the project's own overhead. In a thread::

    from ipm_prefdial.testing.fake_llm import FakeLLM

    with FakeLLM() as url:  # http://127.0.0.1:PORT/v1
        ...  # ipm build --engine openai --base-url URL ...

or as a process: ``python -m ipm_prefdial.testing.fake_llm [--port P] [--latency S] [--fail-percent N] [--log
FILE]`` prints its URL.
"""
