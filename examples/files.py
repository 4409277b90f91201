"""A small site: static files with an index page, an upload form, compressed JSON.

    python -m aioserve examples.files:app --port 8000

- ``/`` and ``/css/site.css`` come from ``examples/site/`` (``app.static``, ``html=True``: a
  directory's ``index.html`` answers for it). ETag, Last-Modified, Range and precompressed siblings
  (``site.css.br`` beside ``site.css``, for example) work with no code.
- ``POST /upload`` takes the form on the index page and answers with the names of its fields and
  files (``request.form()``, from the forms-and-uploads work of issue 14).
- ``/api/stats`` is a JSON answer that ``App(compress=True)`` sends with br, zstd or gzip, whichever
  the client prefers.
"""
from __future__ import annotations

from pathlib import Path

from aioserve import App

SITE = Path(__file__).resolve().parent / "site"

app = App(compress=True)


@app.post("/upload", max_body_size=20 * 2**20)
async def upload(request):
    form = await request.form()
    return {"fields": sorted(form.keys()), "files": sorted(form.files.keys())}


@app.get("/api/stats")
async def stats(request):
    return {"visitors": [{"day": day, "count": 100 + day * 7} for day in range(1, 31)]}


# Last, so that the routes above are not shadowed by a file of the same name.
app.static("/", SITE, html=True, cache_control="public, max-age=300")
