"""The server's limits (configs/serve.yaml `limits`), checked once when the app is built."""
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeLimits:
    max_duration: float | None  # seconds per prompt; None: the model's window (context_frames / frame rate)
    max_prompts: int  # prompts in one request
    max_queue: int  # requests (one per prompt) waiting for a batch row; more are refused with 429
    max_body_bytes: int  # request body, uploads included
    max_batch: int  # rows generated together
    chunk_frames: int  # codec frames per streamed chunk: smaller sends the first audio sooner, costs more per frame

    def __post_init__(self) -> None:
        if self.max_duration is not None and self.max_duration <= 0:
            raise ValueError(f"max_duration must be > 0 seconds or null, got {self.max_duration}")
        for name in ("max_prompts", "max_queue", "max_body_bytes", "max_batch", "chunk_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
