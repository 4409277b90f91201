"""The smallest aioserve program.

Run it with either of:

    python examples/hello.py
    python -m aioserve examples.hello:app --port 8000
"""

from aioserve import App, Request, Response

app = App()


@app.get("/")
async def index(request: Request):
    return "Hello, World!"


@app.get("/hello/{name}")
async def hello(request: Request, name: str):
    greeting = request.query.get("greeting", "Hello")
    return f"{greeting}, {name}!"


@app.get("/json")
async def as_json(request: Request):
    return {"message": "Hello, World!"}


@app.post("/echo")
async def echo(request: Request):
    body = await request.body()
    content_type = request.headers.get("content-type", "application/octet-stream")
    return Response(body, content_type=content_type)


if __name__ == "__main__":
    app.run()
