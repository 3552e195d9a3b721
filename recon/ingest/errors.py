"""The one error type of ingest."""

from __future__ import annotations


class IngestError(Exception):
    """An input could not be read (or stopped being readable).

    ``input`` names the input (path, URL, camera), ``reason`` is a short
    machine-readable code, the message says what went wrong in words.

    Reasons: ``missing``, ``empty_file``, ``not_video``, ``corrupt``,
    ``no_frames``, ``empty_folder``, ``unreadable_image``, ``bad_dataset``,
    ``unreachable``, ``stalled``, ``bad_option``, ``bad_image``, ``closed``,
    ``consumed``, ``unsupported``.
    """

    def __init__(self, input: str, reason: str, message: str) -> None:
        super().__init__(f"{input}: {message}")
        self.input = input
        self.reason = reason
        self.message = message

    def __reduce__(self):  # picklable across processes despite the custom signature
        return (type(self), (self.input, self.reason, self.message))
