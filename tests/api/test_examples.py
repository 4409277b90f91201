"""The programs in examples/ do what their docstrings say."""

from __future__ import annotations

import importlib

import pytest

from aioserve import App, Router
from tests.support import http_client, running

hello = importlib.import_module("examples.hello")
routes_module = importlib.import_module("examples.routes")
scoring = importlib.import_module("examples.scoring")


# --------------------------------------------------------------------------
# examples/hello.py
# --------------------------------------------------------------------------


async def test_hello_example():
    assert isinstance(hello.app, App)
    async with running(hello.app) as server, http_client(server) as client:
        r = await client.get("/")
        assert r.status_code == 200
        assert r.text == "Hello, World!"
        assert r.headers["content-type"] == "text/plain; charset=utf-8"

        assert (await client.get("/hello/Ada")).text == "Hello, Ada!"
        assert (await client.get("/hello/Ada", params={"greeting": "Hi"})).text == "Hi, Ada!"
        assert (await client.get("/json")).json() == {"message": "Hello, World!"}

        r = await client.post("/echo", content=b'{"x": 1}', headers={"content-type": "application/json"})
        assert r.status_code == 200
        assert r.content == b'{"x": 1}'
        assert r.headers["content-type"] == "application/json"

        assert (await client.get("/nope")).status_code == 404
        assert (await client.post("/")).status_code == 405


def test_hello_example_runs_only_as_main():
    with open(hello.__file__, encoding="utf-8") as handle:
        source = handle.read()
    assert 'if __name__ == "__main__":' in source
    assert "app.run()" in source


# --------------------------------------------------------------------------
# examples/routes.py
# --------------------------------------------------------------------------


def test_routes_module_exposes_only_a_router():
    assert isinstance(routes_module.routes, Router)
    assert not any(isinstance(v, App) for v in vars(routes_module).values())


async def test_routes_example():
    app = App()
    app.include(routes_module.routes)
    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/")).text == "Hello from a Router!"
        items = (await client.get("/items")).json()
        assert [item["id"] for item in items][:2] == [1, 2]
        assert (await client.get("/items/1")).json() == {"id": 1, "name": "keyboard", "price": 49.0}
        assert (await client.get("/items/999")).status_code == 404
        assert (await client.get("/items/abc")).status_code == 404

        r = await client.post("/items", json={"name": "monitor", "price": 199})
        assert r.status_code == 201
        created = r.json()
        assert created["name"] == "monitor" and created["price"] == 199.0
        assert (await client.get(f"/items/{created['id']}")).json() == created

        assert (await client.post("/items", json={"price": 3})).status_code == 422
        assert (await client.post("/items", json={"name": "x", "price": -1})).status_code == 422
        assert (await client.post("/items", content=b"{oops")).status_code == 400


async def test_serve_accepts_a_router_directly():
    async with running(routes_module.routes) as server, http_client(server) as client:
        assert (await client.get("/")).text == "Hello from a Router!"
        assert (await client.get("/items/2")).json()["name"] == "mouse"


async def test_routes_example_mounted_under_prefix():
    app = App()
    app.include(routes_module.routes, prefix="/shop")
    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/shop/items/2")).json()["name"] == "mouse"
        assert (await client.get("/items/2")).status_code == 404


# --------------------------------------------------------------------------
# examples/scoring.py
# --------------------------------------------------------------------------

GOOD_PAYMENT = {
    "amount": 42.5,
    "currency": "EUR",
    "card_country": "DE",
    "ip_country": "DE",
    "customer_age_days": 400,
    "card_present": True,
}

RISKY_PAYMENT = {
    "amount": 9000,
    "currency": "USD",
    "card_country": "DE",
    "ip_country": "NG",
    "customer_age_days": 1,
    "card_present": False,
}


async def test_scoring_health():
    async with running(scoring.create_app()) as server, http_client(server) as client:
        r = await client.get("/health")
        assert r.status_code == 200
        assert r.json()["status"] == "ok"
        assert (await client.post("/health")).status_code == 405


async def test_scoring_low_and_high_risk():
    async with running(scoring.app) as server, http_client(server) as client:
        low = await client.post("/score/1001", json=GOOD_PAYMENT)
        assert low.status_code == 200, low.text
        body = low.json()
        assert body["merchant_id"] == 1001
        assert body["decision"] == "approve"
        assert 0 <= body["score"] < 30
        assert body["amount_usd"] == round(42.5 * scoring.USD_RATES["EUR"], 2)
        assert "reasons" not in body

        high = await client.post("/score/1001", json=RISKY_PAYMENT)
        assert high.status_code == 200
        body = high.json()
        assert body["decision"] == "decline"
        assert body["score"] >= 80


async def test_scoring_explain():
    async with running(scoring.app) as server, http_client(server) as client:
        r = await client.post("/score/1003", params={"explain": "true"}, json=RISKY_PAYMENT)
        assert r.status_code == 200
        body = r.json()
        rules = {reason["rule"] for reason in body["reasons"]}
        assert {"very_large_amount", "ip_card_country_mismatch", "high_risk_country", "new_customer"} <= rules
        assert "merchant_category_gambling" in rules
        assert body["thresholds"] == {"review": 30, "decline": 60}
        assert body["score"] == min(100, sum(reason["points"] for reason in body["reasons"]))

        r = await client.post("/score/1003", params={"explain": "false"}, json=GOOD_PAYMENT)
        assert r.status_code == 200 and "reasons" not in r.json()
        r = await client.post("/score/1003", params={"explain": "perhaps"}, json=GOOD_PAYMENT)
        assert r.status_code == 400


async def test_scoring_merchant_category_changes_the_decision():
    payment = dict(GOOD_PAYMENT, amount=1500, currency="USD", customer_age_days=30, card_present=False)
    async with running(scoring.app) as server, http_client(server) as client:
        retail = (await client.post("/score/1001", json=payment)).json()
        gambling = (await client.post("/score/1003", json=payment)).json()
        assert gambling["score"] > retail["score"]
        assert retail["decision"] == "approve"
        assert gambling["decision"] == "review"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"amount": -5}, "amount"),
        ({"amount": "12"}, "amount"),
        ({"amount": True}, "amount"),
        ({"currency": "XYZ"}, "currency"),
        ({"card_country": "Germany"}, "card_country"),
        ({"ip_country": 12}, "ip_country"),
        ({"customer_age_days": -1}, "customer_age_days"),
        ({"card_present": "yes"}, "card_present"),
        ({"amount": 10_000_000_000}, "amount"),
    ],
)
async def test_scoring_validation_errors_are_422(change, field):
    async with running(scoring.app) as server, http_client(server) as client:
        r = await client.post("/score/1001", json=dict(GOOD_PAYMENT, **change))
        assert r.status_code == 422
        assert field in r.text


async def test_scoring_bad_requests():
    async with running(scoring.app) as server, http_client(server) as client:
        missing = {k: v for k, v in GOOD_PAYMENT.items() if k not in ("amount", "card_country")}
        r = await client.post("/score/1001", json=missing)
        assert r.status_code == 422
        assert "amount" in r.text and "card_country" in r.text

        r = await client.post("/score/1001", json=[1, 2, 3])
        assert r.status_code == 422

        r = await client.post("/score/1001", content=b"{broken", headers={"content-type": "application/json"})
        assert r.status_code == 400

        r = await client.post("/score/1001", content=b"amount=5", headers={"content-type": "text/plain"})
        assert r.status_code == 415

        assert (await client.post("/score/9999", json=GOOD_PAYMENT)).status_code == 404
        assert (await client.post("/score/abc", json=GOOD_PAYMENT)).status_code == 404
        assert (await client.get("/score/1001")).status_code == 405


def test_scoring_rules_unit():
    merchant = scoring.MERCHANTS[1002]
    payment = scoring.validate_payment(dict(GOOD_PAYMENT))
    points, reasons = scoring.score_payment(payment, merchant)
    assert points == max(0, sum(r["points"] for r in reasons))
    assert scoring.decide(0, merchant) == "approve"
    assert scoring.decide(merchant.review_at, merchant) == "review"
    assert scoring.decide(merchant.decline_at, merchant) == "decline"


# --------------------------------------------------------------------------
# examples/live.py
# --------------------------------------------------------------------------


async def test_live_example_pushes_both_ways():
    import asyncio

    from websockets.asyncio.client import connect

    live = importlib.import_module("examples.live")
    async with running(live.app, ws_ping_interval=None) as server, http_client(server) as client:
        assert "EventSource" in (await client.get("/")).text
        async with client.stream("GET", "/events", headers={"Last-Event-ID": "4"}) as events:
            lines = events.aiter_lines()
            assert await asyncio.wait_for(lines.__anext__(), 5) == "event: message"
            assert await asyncio.wait_for(lines.__anext__(), 5) == "data: resumed after event 4"
            async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await ws.send("hello all")
                assert await asyncio.wait_for(ws.recv(), 5) == "hello all"  # the chat echoes to everyone
                seen = []
                for _ in range(40):  # ticks (one a second) may come first; the message comes within a read or two
                    seen.append(await asyncio.wait_for(lines.__anext__(), 5))
                    if seen[-1] == "data: hello all":
                        break
                assert seen[-1] == "data: hello all"
