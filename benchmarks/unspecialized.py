"""Which of aioserve's hot-path instructions the interpreter left unspecialized (CPython 3.11+).

    python -m benchmarks.unspecialized [--only plaintext,echo-1k] [--requests 100] [--all]

Python 3.11 specializes an instruction after it has run a few times with the same kinds of operands
(``LOAD_ATTR`` becomes ``LOAD_ATTR_SLOT``, ``COMPARE_OP`` becomes ``COMPARE_OP_INT_JUMP``...). What
it cannot specialize stays generic and costs several times more, and nothing in the source shows it:
a method called on an imported object, a class-level default read through an instance, a function
stored on an object called like a method, a property, a comparison not directly followed by its jump.

This warms the connection up with the requests of ``benchmarks/inprocess.py``, traces the instructions
executed for ``--requests`` more, and lists those of aioserve's modules that are still in their generic
or adaptive form, with how often each runs per request. Calls (``PRECALL``/``CALL``) of C functions and
``&``/``|`` on ints have no specialized form in 3.11 and are left out unless ``--all``.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dis
import sys
from types import CodeType, FrameType
from typing import Any

from aioserve.config import Config
from aioserve.connection import Connection
from aioserve.shared import ServerState

from .inprocess import LOOP_TURNS, REQUESTS, CountingTransport
from .servers.aioserve_app import app

GENERIC = {"LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "BINARY_SUBSCR", "COMPARE_OP", "BINARY_OP", "LOAD_GLOBAL",
           "STORE_SUBSCR", "UNPACK_SEQUENCE", "FOR_ITER", "CALL", "PRECALL"}
NO_SPECIALIZED_FORM = ("CALL", "PRECALL")  # a C call is specialized in PRECALL's forms, or not at all


def _is_generic(opname: str, argrepr: str, show_all: bool) -> bool:
    base = opname.removesuffix("_ADAPTIVE")
    if not (opname.endswith("_ADAPTIVE") or opname in GENERIC):
        return False
    if show_all:
        return True
    return base not in NO_SPECIALIZED_FORM and not (base == "BINARY_OP" and argrepr in ("&", "|", "&=", "|="))


async def trace(data: bytes, turns: int, requests: int) -> collections.Counter[tuple[CodeType, int]]:
    """How often each (code, offset) ran while ``requests`` requests were answered, after a warm-up."""
    state = ServerState(app, Config(access_log=False), asyncio.get_running_loop())
    connection = Connection(state)
    connection.connection_made(CountingTransport())
    for _ in range(3000):  # enough for every instruction to have been specialized if it can be
        connection.data_received(data)
        for _ in range(turns):
            await asyncio.sleep(0)
    hits: collections.Counter[tuple[CodeType, int]] = collections.Counter()

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return on_opcode

    def on_opcode(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            hits[(frame.f_code, frame.f_lasti)] += 1
        return on_opcode

    sys.settrace(on_call)
    try:
        for _ in range(requests):
            connection.data_received(data)
            for _ in range(turns):
                await asyncio.sleep(0)
    finally:
        sys.settrace(None)
    return hits


def report(name: str, hits: collections.Counter[tuple[CodeType, int]], requests: int, show_all: bool) -> None:
    print(f"== {name}")
    found = 0
    for code in sorted({code for code, _ in hits}, key=lambda c: (c.co_filename, c.co_firstlineno)):
        if "/aioserve/" not in code.co_filename:
            continue
        by_offset = {i.offset: i for i in dis.get_instructions(code, adaptive=True)}  # type: ignore[call-arg]
        for (hit_code, offset), count in sorted(hits.items(), key=lambda item: item[0][1]):
            instruction = by_offset.get(offset) if hit_code is code else None
            if instruction is None or not _is_generic(instruction.opname, instruction.argrepr, show_all):
                continue
            found += 1
            where = f"{code.co_filename.rsplit('/', 1)[-1]}:{instruction.positions.lineno}"  # type: ignore[union-attr]
            print(f"{count / requests:6.1f}  {where:<20} {code.co_name:<22} {instruction.opname} {instruction.argrepr}")
    if not found:
        print("   (none)")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.unspecialized", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", type=lambda text: text.split(","), default=None,
                   help=f"comma-separated requests (of {', '.join(REQUESTS)})")
    p.add_argument("--requests", type=int, default=100, help="requests traced after the warm-up")
    p.add_argument("--all", action="store_true", help="also list C calls and int & |, which 3.11 never specializes")
    args = p.parse_args()
    if sys.version_info < (3, 11) or sys.version_info >= (3, 12):
        print(f"note: the instruction names here are CPython 3.11's; this is {sys.version.split()[0]}",
              file=sys.stderr)
    for name, data in REQUESTS.items():
        if args.only and name not in args.only:
            continue
        hits = asyncio.run(trace(data, LOOP_TURNS.get(name, 0), args.requests))
        report(name, hits, args.requests, args.all)


if __name__ == "__main__":
    main()
