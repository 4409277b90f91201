"""Handlers that cannot suspend, run as plain calls.

A coroutine function with no ``await``, ``async for`` or ``async with`` finishes on its first step,
so the connection runs it inline, with no task and no trip through the event loop (``can_suspend``).
Even then, driving it costs creating a coroutine object and catching the ``StopIteration`` that
carries its result: about a third of a microsecond, some 6% of a whole request.

``plain_function`` removes that too. CPython (3.11 to 3.13) compiles a coroutine's code to start
with ``RETURN_GENERATOR; POP_TOP``: the two instructions that wrap the frame in a coroutine object.
The same code with those two made ``NOP`` and the coroutine flag cleared is an ordinary function:
same locals, line numbers, exception table and result. This is checked once, at import, on a probe
that exercises defaults, keyword-only arguments, closures and exceptions; on any other interpreter,
or if the probe disagrees, ``plain_function`` returns None and handlers run as coroutines.
"""
from __future__ import annotations

import dis
import inspect
import types
from typing import Any, Callable

# Opcodes through which a coroutine can give control back to the event loop.
_SUSPENDING_OPS = frozenset({"GET_AWAITABLE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH", "YIELD_VALUE", "SEND"})
_CO_COROUTINE = inspect.CO_COROUTINE
_NOP = dis.opmap.get("NOP")


def can_suspend(handler: Callable[..., Any]) -> bool:
    """Whether ``handler`` contains an ``await``, ``async for`` or ``async with``.

    Anything unusual (a wrapped or non-function callable) counts as "can suspend", which is always safe.
    """
    code = getattr(inspect.unwrap(handler), "__code__", None)
    if code is None or inspect.unwrap(handler) is not handler:
        return True
    return any(ins.opname in _SUSPENDING_OPS for ins in dis.get_instructions(code))


def _strip_coroutine(handler: Callable[..., Any]) -> Callable[..., Any] | None:
    code = getattr(handler, "__code__", None)
    if type(handler) is not types.FunctionType or code is None or not code.co_flags & _CO_COROUTINE or _NOP is None:
        return None
    instructions = list(dis.get_instructions(code))
    starts = [i for i, ins in enumerate(instructions) if ins.opname == "RETURN_GENERATOR"]
    if len(starts) != 1 or starts[0] + 1 >= len(instructions) or instructions[starts[0] + 1].opname != "POP_TOP":
        return None
    raw = bytearray(code.co_code)
    for ins in instructions[starts[0]:starts[0] + 2]:
        if raw[ins.offset + 1] != 0:  # both take no argument; anything else is not the layout we know
            return None
        raw[ins.offset] = _NOP
    plain = types.FunctionType(code.replace(co_code=bytes(raw), co_flags=code.co_flags & ~_CO_COROUTINE),
                               handler.__globals__, handler.__name__, handler.__defaults__, handler.__closure__)
    plain.__kwdefaults__ = handler.__kwdefaults__
    plain.__qualname__ = handler.__qualname__
    plain.__module__ = handler.__module__
    return plain


def _probe_works() -> bool:
    captured = ["closure"]

    async def probe(request: Any, value: int, scale: int = 2, *, sign: int = 1) -> Any:
        if value < 0:
            raise ValueError(value)
        try:
            return {"request": request, "value": sign * scale * value, "captured": captured[0]}
        except KeyError:  # keeps an exception table in the probe
            return None

    try:
        plain = _strip_coroutine(probe)
        if plain is None or inspect.iscoroutinefunction(plain):
            return False
        expected = {"request": "r", "value": -6, "captured": "closure"}
        if plain("r", 3, sign=-1) != expected or plain("r", 3, 2, sign=-1) != expected:
            return False
        try:
            plain("r", -1)
        except ValueError as exc:
            return exc.args == (-1,)
        return False
    except Exception:
        return False


_WORKS = _probe_works()


def plain_function(handler: Callable[..., Any]) -> Callable[..., Any] | None:
    """The same handler as an ordinary function, if it cannot suspend and this interpreter allows it."""
    if not _WORKS or can_suspend(handler):
        return None
    return _strip_coroutine(handler)
