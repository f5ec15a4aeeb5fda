"""Serving a trained model: the batched decoding engine, the OpenAI-compatible API and the inspector page."""

from lucidlm.serve.api import ServerSettings, create_app
from lucidlm.serve.engine import Engine, QueueFull, Request, TokenEvent
from lucidlm.serve.engine_process import EngineProcess, EngineStopped
from lucidlm.serve.server import BackgroundServer

__all__ = [
    "BackgroundServer",
    "Engine",
    "EngineProcess",
    "EngineStopped",
    "QueueFull",
    "Request",
    "ServerSettings",
    "TokenEvent",
    "create_app",
]
