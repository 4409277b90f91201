"""A module whose only servable object is a Router.

    python -m aioserve examples.routes:routes

The CLI wraps a Router in a default App, so this is a complete program.
"""

from aioserve import HTTPError, Request, Router, json

routes = Router()

_ITEMS: dict[int, dict] = {
    1: {"id": 1, "name": "keyboard", "price": 49.0},
    2: {"id": 2, "name": "mouse", "price": 19.5},
}


@routes.get("/")
async def index(request: Request):
    return "Hello from a Router!"


@routes.get("/items")
async def list_items(request: Request):
    return sorted(_ITEMS.values(), key=lambda item: item["id"])


@routes.get("/items/{item_id:int}")
async def get_item(request: Request, item_id: int):
    item = _ITEMS.get(item_id)
    if item is None:
        raise HTTPError(404, detail=f"no item {item_id}")
    return item


@routes.post("/items")
async def create_item(request: Request):
    data = await request.json()
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        raise HTTPError(422, detail="'name' must be a non-empty string")
    price = data.get("price", 0)
    if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
        raise HTTPError(422, detail="'price' must be a non-negative number")
    item_id = max(_ITEMS, default=0) + 1
    item = {"id": item_id, "name": data["name"], "price": float(price)}
    _ITEMS[item_id] = item
    return json(item, status=201)
