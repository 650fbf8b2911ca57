"""A TCP forwarder in a process of its own: 127.0.0.1:PORT -> TARGET:PORT, TARGET the last line read
from stdin (the test writes one when the member moves: a per-member Service's part in a real
cluster). A new connection goes to the target of its time; open ones stay where they are.

Why a process: in the pytest process, a forwarder's threads share one GIL with the test's
watches and pollers, and each look of the operator through it took 50-110 ms on the loaded test
bed (session 9); here it is an event loop of its own.

    python -m tests.e2e.memberforward PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def main(port: int) -> None:
    target = ""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not target:
                raise OSError("no member yet")
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(target, port), 2)
        except (OSError, TimeoutError):
            writer.close()
            return
        # (cancelled when the test ends and the loop closes: connections end with the process)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    print("listening", flush=True)  # the test waits for this line
    async with server:
        while line := await stdin.readline():  # the test's end closes stdin: so does this
            target = line.decode().strip()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
