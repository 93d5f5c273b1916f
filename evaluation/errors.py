"""The one exception type for mistakes a user can fix.

It lives in `evaluation`, the bottom of the dependency chain (cluster -> sweep -> trainables ->
evaluation), so that every package can raise it. Tracebacks are for our bugs; a `ConfigError` is
printed as one line by the CLI: the field path, the bad value and what is allowed.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A user error: `field` is a dotted path (``lora.r``), `allowed` says what would be accepted."""

    def __init__(self, field: str, value: Any, allowed: str, hint: str = "") -> None:
        self.field, self.value, self.allowed, self.hint = field, value, allowed, hint
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:197] + "..."
        msg = f"{field}: got {shown}; allowed: {allowed}"
        super().__init__(msg + (f" ({hint})" if hint else ""))

    def __reduce__(self):
        # Ray ships a trial's exception to the driver by pickling it; rebuild from our own fields.
        return (type(self), (self.field, self.value, self.allowed, self.hint))
