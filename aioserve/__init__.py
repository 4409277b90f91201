"""aioserve: an asyncio-native HTTP/1.1 server framework built for tight latency budgets."""
from __future__ import annotations

__version__ = "0.1.0"

from .app import App
from .config import Config
from .errors import ClientDisconnected, HTTPError
from .request import Request
from .response import Response, StreamResponse, html, json, redirect, stream, text
from .router import Router
from .processes import run
from .radix import RouteError
from .server import Server, serve
from .sse import ServerSentEvent, sse
from .staticfiles import FileResponse
from .websocket import WebSocket, WebSocketDisconnect

__all__ = [
    "App", "ClientDisconnected", "Config", "FileResponse", "HTTPError", "Request", "Response", "RouteError", "Router",
    "Server",
    "ServerSentEvent", "StreamResponse", "WebSocket", "WebSocketDisconnect", "__version__", "html", "json",
    "redirect", "run", "serve", "sse", "stream", "text",
]
