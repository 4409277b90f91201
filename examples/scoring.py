"""A small card-payment fraud-scoring API.

    python -m aioserve examples.scoring:app
    python -m aioserve examples.scoring:create_app --factory

POST /score/{merchant_id:int}   score one payment; ?explain=true adds the reasons
GET  /health                    liveness probe

Example:

    curl -s -X POST 'http://127.0.0.1:8000/score/1001?explain=true' \\
         -H 'content-type: application/json' \\
         -d '{"amount": 1250.00, "currency": "EUR", "card_country": "DE",
              "ip_country": "NG", "customer_age_days": 2, "card_present": false}'

The rules are deliberately simple and deterministic; the point is the shape of
a production endpoint: strict input validation with 400 (unreadable) vs 422
(readable but invalid), per-merchant configuration, and a stable JSON answer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from aioserve import App, HTTPError, Request

# Rough conversion rates to USD, enough to compare amounts across currencies.
USD_RATES: dict[str, float] = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "CHF": 1.13,
    "CAD": 0.73,
    "AUD": 0.66,
    "SEK": 0.095,
    "JPY": 0.0067,
}

# Countries that this (fictional) issuer treats as elevated risk.
HIGH_RISK_COUNTRIES = frozenset({"NG", "KP", "IR", "VE"})

MAX_AMOUNT_USD = 1_000_000.0


@dataclass(frozen=True)
class Merchant:
    name: str
    category: str
    review_at: int  # score at or above which a payment goes to manual review
    decline_at: int  # score at or above which it is declined


MERCHANTS: dict[int, Merchant] = {
    1001: Merchant("Corner Bookshop", "retail", review_at=50, decline_at=80),
    1002: Merchant("FastGadgets Online", "electronics", review_at=40, decline_at=70),
    1003: Merchant("LuckyStar Gaming", "gambling", review_at=30, decline_at=60),
}

CATEGORY_RISK = {"retail": 0, "electronics": 10, "gambling": 20}

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def _parse_flag(value: str | None, name: str) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise HTTPError(400, detail=f"query parameter {name!r} must be true or false")


def _country(data: dict, field: str, errors: list[str], required: bool) -> str | None:
    value = data.get(field)
    if value is None:
        if required:
            errors.append(f"{field}: required")
        return None
    if not isinstance(value, str) or len(value) != 2 or not value.isalpha() or not value.isascii():
        errors.append(f"{field}: must be a two-letter ISO 3166 country code")
        return None
    return value.upper()


def validate_payment(data: object) -> dict:
    """Return the cleaned payment or raise HTTPError(422) listing every problem."""
    if not isinstance(data, dict):
        raise HTTPError(422, detail="body must be a JSON object")
    errors: list[str] = []

    amount = data.get("amount")
    if amount is None:
        errors.append("amount: required")
    elif isinstance(amount, bool) or not isinstance(amount, (int, float)):
        errors.append("amount: must be a number")
    elif not math.isfinite(amount) or amount <= 0:
        errors.append("amount: must be greater than zero")

    currency = data.get("currency")
    if currency is None:
        errors.append("currency: required")
    elif not isinstance(currency, str) or currency.upper() not in USD_RATES:
        errors.append(f"currency: must be one of {', '.join(sorted(USD_RATES))}")
    else:
        currency = currency.upper()

    card_country = _country(data, "card_country", errors, required=True)
    ip_country = _country(data, "ip_country", errors, required=False)

    age = data.get("customer_age_days")
    if age is not None and (isinstance(age, bool) or not isinstance(age, int) or age < 0):
        errors.append("customer_age_days: must be a non-negative integer")

    card_present = data.get("card_present", False)
    if not isinstance(card_present, bool):
        errors.append("card_present: must be true or false")

    if not errors:
        amount_usd = amount * USD_RATES[currency]
        if amount_usd > MAX_AMOUNT_USD:
            errors.append("amount: exceeds the single-payment limit")

    if errors:
        raise HTTPError(422, detail="; ".join(errors))
    return {
        "amount": float(amount),
        "currency": currency,
        "amount_usd": round(amount * USD_RATES[currency], 2),
        "card_country": card_country,
        "ip_country": ip_country,
        "customer_age_days": age,
        "card_present": card_present,
    }


def score_payment(payment: dict, merchant: Merchant) -> tuple[int, list[dict]]:
    """A deterministic rule score between 0 and 100, with the reasons behind it."""
    reasons: list[dict] = []

    def add(points: int, rule: str) -> None:
        if points:
            reasons.append({"rule": rule, "points": points})

    usd = payment["amount_usd"]
    if usd >= 5000:
        add(35, "very_large_amount")
    elif usd >= 1000:
        add(20, "large_amount")
    elif usd >= 250:
        add(5, "medium_amount")

    ip_country = payment["ip_country"]
    if ip_country is not None and ip_country != payment["card_country"]:
        add(15, "ip_card_country_mismatch")
    if payment["card_country"] in HIGH_RISK_COUNTRIES or ip_country in HIGH_RISK_COUNTRIES:
        add(25, "high_risk_country")

    age = payment["customer_age_days"]
    if age is None:
        add(5, "unknown_customer")
    elif age < 7:
        add(15, "new_customer")
    elif age > 365:
        add(-10, "established_customer")

    if not payment["card_present"]:
        add(5, "card_not_present")

    add(CATEGORY_RISK.get(merchant.category, 0), f"merchant_category_{merchant.category}")

    score = max(0, min(100, sum(r["points"] for r in reasons)))
    return score, reasons


def decide(score: int, merchant: Merchant) -> str:
    if score >= merchant.decline_at:
        return "decline"
    if score >= merchant.review_at:
        return "review"
    return "approve"


def create_app() -> App:
    app = App()
    started = time.monotonic()

    @app.get("/health")
    async def health(request: Request):
        return {"status": "ok", "uptime_s": round(time.monotonic() - started, 3)}

    @app.post("/score/{merchant_id:int}")
    async def score(request: Request, merchant_id: int):
        explain = _parse_flag(request.query.get("explain"), "explain")
        merchant = MERCHANTS.get(merchant_id)
        if merchant is None:
            raise HTTPError(404, detail=f"unknown merchant {merchant_id}")
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise HTTPError(415, detail="send the payment as application/json")
        payment = validate_payment(await request.json())  # invalid JSON -> 400
        points, reasons = score_payment(payment, merchant)
        result = {
            "merchant_id": merchant_id,
            "score": points,
            "decision": decide(points, merchant),
            "amount_usd": payment["amount_usd"],
        }
        if explain:
            result["reasons"] = reasons
            result["thresholds"] = {"review": merchant.review_at, "decline": merchant.decline_at}
        return result

    return app


app = create_app()

if __name__ == "__main__":
    app.run()
