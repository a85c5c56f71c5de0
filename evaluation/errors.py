"""The one error type of the evaluation package: a problem a user fixes, stated in one line."""
from __future__ import annotations


class EvaluationError(ValueError):
    """A bad path, a missing weights file, unpaired images or a bad table; the message is one line."""
