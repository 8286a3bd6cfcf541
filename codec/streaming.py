"""Stateful streaming for the codec's convolutions and LSTM (the LM decodes with its own state, lm/lm.py DecodeState).

    with model.streaming(batch_size=2):
        for chunk in chunks:               # consecutive pieces of one stream
            out = model(chunk)             # each call sees the left context kept from the previous one

Entering the context creates, for every `StreamingModule` inside `model`, its typed state (a dataclass of
tensors allocated once); leaving it drops every state, so no stale context can leak into the next stream.
Outside the context the same modules run offline on whole signals.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from torch import nn

State = TypeVar("State")


class StreamingModule(nn.Module, Generic[State]):
    """A module that can process a stream chunk by chunk.

    Modules that carry context between chunks override `init_streaming_state`; containers (an encoder, the
    codec) keep the default, hold no state themselves, and use `streaming()` to switch all their parts at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.streaming_state: State | None = None
        self.is_streaming = False

    def init_streaming_state(self, batch_size: int) -> State | None:
        return None

    @contextmanager
    def streaming(self, batch_size: int) -> Iterator[None]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        modules = [module for module in self.modules() if isinstance(module, StreamingModule)]
        if any(module.is_streaming for module in modules):
            raise RuntimeError("streaming() entered twice: this module (or a part of it) is already streaming")
        try:
            for module in modules:
                module.streaming_state = module.init_streaming_state(batch_size)
                module.is_streaming = True
            yield
        finally:
            for module in modules:
                module.streaming_state = None
                module.is_streaming = False
