"""Test doubles that tests and benchmarks share: a fake OpenAI-compatible back end that is a real
HTTP server on 127.0.0.1, and a runner for an ASGI app (`fake_openai`). Nothing imports this
package at run time; it holds no fixtures (those stay in tests/)."""
