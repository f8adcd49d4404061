"""kdroute: distill, benchmark, route and monitor teacher/student LLM pairs."""

__version__ = "0.1.0"
