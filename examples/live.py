"""A live dashboard that pushes both ways: Server-Sent Events down, a WebSocket up and down.

    python -m aioserve examples.live:app --port 8000     # then open http://127.0.0.1:8000/

- ``GET /events`` streams a ``tick`` event (a counter and the number of people connected) every second,
  plus a ``message`` event for every chat message; a client that reconnects sends ``Last-Event-ID``
  and is told where it resumed.
- ``/ws`` is a WebSocket chat: whatever one browser sends, every connected WebSocket and every event
  stream receives.
"""
from __future__ import annotations

import asyncio
from typing import Any

from aioserve import App, Request, ServerSentEvent, WebSocket, html, sse

app = App()
sockets: set[WebSocket] = set()
listeners: set[asyncio.Queue[Any]] = set()  # one bounded queue per open event stream


def publish(message: str) -> None:
    """Hand a chat message to every event stream (a stream too slow to keep up drops it)."""
    for queue in listeners:
        if not queue.full():
            queue.put_nowait(message)


@app.get("/")
async def index(request: Request):
    return html(PAGE)


@app.get("/events")
async def events(request: Request):
    last = request.headers.get("last-event-id")
    start = int(last) + 1 if last and last.isdigit() else 0

    async def stream():
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=100)
        listeners.add(queue)
        try:
            if last is not None:
                yield ServerSentEvent(f"resumed after event {last}", event="message")
            n = start
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    yield ServerSentEvent({"n": n, "sockets": len(sockets), "streams": len(listeners)},
                                          event="tick", id=str(n))
                    n += 1
                else:
                    yield ServerSentEvent(message, event="message")
        finally:  # runs within a second of the client leaving
            listeners.discard(queue)

    return sse(stream(), ping=15)


@app.websocket("/ws")
async def chat(ws: WebSocket):
    await ws.accept()
    sockets.add(ws)
    try:
        async for message in ws:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            publish(text)
            for other in list(sockets):
                try:
                    await other.send(text)
                except Exception:  # that socket is closing; its own handler removes it
                    pass
    finally:
        sockets.discard(ws)


PAGE = """<!doctype html>
<meta charset="utf-8"><title>aioserve live</title>
<h1>aioserve live</h1>
<p>tick: <b id="tick">-</b> &middot; WebSockets: <b id="sockets">0</b> &middot; streams: <b id="streams">0</b></p>
<form id="f"><input id="msg" autocomplete="off" placeholder="say something"><button>send</button></form>
<ul id="log"></ul>
<script>
const log = (t) => { const li = document.createElement("li"); li.textContent = t; document.getElementById("log").prepend(li); };
const es = new EventSource("/events");
es.addEventListener("tick", (e) => { const d = JSON.parse(e.data);
  for (const k of ["n", "sockets", "streams"]) document.getElementById(k === "n" ? "tick" : k).textContent = d[k]; });
es.addEventListener("message", (e) => log("sse: " + e.data));
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
ws.onmessage = (e) => log("ws: " + e.data);
document.getElementById("f").onsubmit = (e) => { e.preventDefault(); const m = document.getElementById("msg");
  if (m.value) ws.send(m.value); m.value = ""; };
</script>
"""

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
