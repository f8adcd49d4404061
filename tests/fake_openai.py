"""The fake OpenAI back end lives in `kdroute/testing/fake_openai.py`, where benchmarks and
scripts import it too; this name stays for the tests that import it as `fake_openai`."""

from kdroute.testing.fake_openai import (  # noqa: F401
    AppServer,
    Behaviour,
    FakeOpenAI,
    Received,
)
