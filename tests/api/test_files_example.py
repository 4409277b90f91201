"""examples/files.py serves its small site, its JSON, and its upload form's answer."""
from __future__ import annotations

import importlib


from tests.support import http_client, running

files = importlib.import_module("examples.files")


async def test_files_example_serves_the_site():
    async with running(files.app) as server, http_client(server) as client:
        r = await client.get("/")
        assert r.status_code == 200 and "<form action=\"/upload\"" in r.text
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["cache-control"] == "public, max-age=300"
        css = await client.get("/css/site.css")
        assert css.status_code == 200 and css.headers["content-type"] == "text/css; charset=utf-8"
        assert (await client.get("/css")).headers["location"] == "/css/"
        assert (await client.get("/files.py")).status_code == 404
        stats = await client.get("/api/stats")
        assert stats.json()["visitors"][0] == {"day": 1, "count": 107}


async def test_files_example_compresses_json():
    async with running(files.app) as server, http_client(server) as client:
        r = await client.get("/api/stats", headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"


async def test_files_example_upload_returns_field_names():
    async with running(files.app) as server, http_client(server) as client:
        r = await client.post("/upload", data={"name": "Ada"}, files={"file": ("a.txt", b"hello")})
        assert r.status_code == 200 and r.json() == {"fields": ["name"], "files": ["file"]}
