"""The app the form tests serve, in process and in a subprocess (``tests.support.forms_app:app``)."""
from __future__ import annotations

from aioserve import App, HTTPError
from aioserve.forms import FormLimits

app = App()
#: Every UploadFile a request produced, so tests can look at them after the answer.
uploads: list = []


def _describe(form) -> dict:
    return {
        "fields": form.multi_items(),
        "keys": list(form.keys()),
        "files": [
            {"field": name, "filename": f.filename, "content_type": f.content_type, "size": f.size,
             "in_memory": f.in_memory, "headers": f.headers}
            for name, f in form.files.multi_items()
        ],
    }


@app.post("/form", max_body_size=None)
async def form(request):
    form = await request.form()
    uploads.extend(f for _, f in form.files.multi_items())
    return _describe(form)


@app.post("/form/tight")
async def tight(request):
    limits = FormLimits(max_parts=int(request.query.get("parts", 1000)),
                        max_field_size=int(request.query.get("field", 1 << 20)),
                        max_file_size=int(request.query["file"]) if "file" in request.query else None,
                        max_part_header_size=int(request.query.get("header", 8192)))
    async with await request.form(limits=limits) as form:
        return _describe(form)


@app.post("/echo-file", max_body_size=None)
async def echo_file(request):
    """The first file's bytes, read back through UploadFile.read()."""
    form = await request.form()
    f = form.files[request.query.get("field", "file")]
    data = await f.read()
    await form.aclose()
    return data


@app.post("/parts", max_body_size=None)
async def parts(request):
    """Streams every part; counts its bytes. ``?skip=NAME`` leaves that part unread."""
    skip = request.query.get("skip")
    out = []
    async for part in request.multipart():
        size = 0
        if part.name != skip:
            async for chunk in part:
                size += len(chunk)
        out.append({"name": part.name, "filename": part.filename, "size": size,
                    "content_type": part.content_type})
    return out


@app.post("/upload-size", max_body_size=None)
async def upload_size(request):
    async with await request.form() as form:
        f = form.files.get("file")
        if f is None:
            raise HTTPError(400, "no file")
        return {"size": f.size, "in_memory": f.in_memory, "name": form.get("name")}
