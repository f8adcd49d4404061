"""What the back ends and the local provider share: the upstream failure and the provider name.

A leaf module (no gateway imports), so `backends.py` and `local.py` both import it and neither
imports the other (issue 16: no circles).
"""

from __future__ import annotations

# litellm custom-provider name under which local `hf:` directories are served (`local.py`).
LOCAL_PROVIDER = "kdroute_hf"


class UpstreamError(Exception):
    """A back end failed. `status` is the upstream HTTP status, None for a connection failure."""

    def __init__(self, status: int | None, message: str, *, retry_after: float | None = None,
                 timeout: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.timeout = timeout

    @property
    def retryable(self) -> bool:
        if self.timeout:
            return False
        return self.status is None or self.status == 429 or self.status >= 500
