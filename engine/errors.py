"""The one exception root of callbridge and its families.

Every error the engine raises on purpose derives from ``CallbridgeError`` and carries the
HTTP status it maps to, a machine-readable ``code`` and a human ``detail``. The API layer turns
them into each API's own envelope in one place (``engine.api.envelopes``); nothing else formats
errors for the wire.

    CallbridgeError
    +-- ValidationError        400  bad input: wrong type, missing field, bad format
    |   +-- PayloadTooLarge    413  body over the configured limit
    +-- AuthenticationError    401  missing or unknown credentials
    +-- PermissionDenied       403  credentials valid, but not for this organization
    +-- NotFound               404  no such resource visible to the caller
    +-- Conflict               409  the request collides with current state
    +-- InvalidState           422  command not allowed in the leg's current state
    +-- TooManyRequests        429  an organization over its limits, Retry-After
                                    (engine.admission.limits)
    +-- ProviderError          502  a provider's API refused or failed
    +-- StorageError           500  the database failed
    |   +-- StoreUnreachable   503  the database cannot be reached (Retry-After)
    +-- InputFailed            500  the machine failed on an input and rolled back (engine.runtime)
"""

from __future__ import annotations


class CallbridgeError(Exception):
    """Root of every error callbridge raises on purpose."""

    status: int = 500
    code: str = "10007"
    title: str = "Unexpected error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        # ``message`` is the headline an API envelope shows (e.g. "Bridge not found."); when
        # absent the API layer uses the failing endpoint's own headline or the family title.
        self.message = message
        if code is not None:
            self.code = code


class ValidationError(CallbridgeError):
    status = 400
    code = "10015"
    title = "Bad request"


class PayloadTooLarge(ValidationError):
    status = 413
    code = "10015"
    title = "Payload too large"


class AuthenticationError(CallbridgeError):
    status = 401
    code = "10009"
    title = "Authentication failed"


class PermissionDenied(CallbridgeError):
    status = 403
    code = "10010"
    title = "Forbidden"


class NotFound(CallbridgeError):
    status = 404
    code = "10005"
    title = "Resource not found"


class Conflict(CallbridgeError):
    status = 409
    code = "10015"
    title = "Conflict"


class InvalidState(CallbridgeError):
    status = 422
    code = "90018"
    title = "Invalid call state"


class ProviderError(CallbridgeError):
    status = 502
    code = "10007"
    title = "Provider error"


class StorageError(CallbridgeError):
    status = 500
    code = "10007"
    title = "Storage error"


class StoreUnreachable(StorageError):
    """503: the database cannot be reached (a lost connection, a server that does not answer).
    Nothing was stored; the same request is worth sending again once it is back."""

    status = 503
    title = "Database unavailable"
    retry_after_header = "1"


class ShuttingDown(CallbridgeError):
    """503: this process is stopping and takes no new calls (engine/runtime/lifecycle.py); another
    process, or this one's successor, will."""

    status = 503
    code = "10007"
    title = "Service unavailable"


class InputFailed(CallbridgeError):
    """The machine could not apply an input: nothing changed, and the traceback is logged under
    ``fault_id`` (the one thing a client can quote to find it)."""

    status = 500
    code = "10007"
    title = "Unexpected error"

    def __init__(self, fault_id: str) -> None:
        super().__init__(
            f"An unexpected error occurred and nothing was changed (fault id {fault_id})"
        )
        self.fault_id = fault_id


class InputNotStored(InputFailed):
    """The input's changes could not be stored, so it was undone: 503, worth retrying (a
    provider retries its webhook, or sends it to the failover URL)."""

    status = 503
    title = "Service unavailable"
    retry_after_header = "1"

    def __init__(self, fault_id: str) -> None:
        super().__init__(fault_id)
        self.detail = f"The change could not be stored and was not made (fault id {fault_id})"
        self.args = (self.detail,)
