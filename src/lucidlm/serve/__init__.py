"""Serving a trained model: the batched decoding engine, the OpenAI-compatible API and the inspector page."""

from lucidlm.serve.api import ServerSettings, create_app
from lucidlm.serve.engine import Engine, QueueFull, Request, TokenEvent
from lucidlm.serve.server import BackgroundServer

__all__ = ["BackgroundServer", "Engine", "QueueFull", "Request", "ServerSettings", "TokenEvent", "create_app"]
