"""Errors of the evaluation package, inside loradeck's one error hierarchy."""

from __future__ import annotations

from loradeck.core.errors import LoradeckError


class EvaluationError(LoradeckError):
    """Evaluation cannot run: nothing to evaluate, bad settings, unreadable inputs."""

    title = "evaluation error"


class PromptFileError(EvaluationError):
    """A prompt file that does not parse; the message names the file and line."""

    title = "bad prompt file"


class WeightsUnavailableError(EvaluationError):
    """CLIP weights that cannot be loaded here; the message says what to download and where."""

    title = "CLIP weights unavailable"
