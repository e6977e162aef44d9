"""A TCP proxy that delays every byte by a fixed time in each direction, as a
database one network hop away would: a round trip through it costs twice the
delay more than without it. Order is kept; throughput is not limited.

    .venv/bin/python benchmarks/delay_proxy.py --target 127.0.0.1:5432 --delay-ms 1 [--listen 127.0.0.1:0]

Prints "listening on HOST:PORT" once it accepts connections, then runs until
stopped (SIGTERM or SIGINT).
"""

import argparse
import asyncio
import signal


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copies reader to writer, each chunk sent `delay_s` after it arrived."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay_s, data))
    except ConnectionError:
        pass
    finally:
        queue.put_nowait((0.0, b""))
        try:
            await sender
            writer.close()
        except ConnectionError:
            pass


async def serve(listen: tuple[str, int], target: tuple[str, int], delay_s: float) -> None:
    async def connect(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _forward(client_reader, upstream_writer, delay_s),
            _forward(upstream_reader, client_writer, delay_s),
        )

    server = await asyncio.start_server(connect, *listen)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", type=_address, required=True, help="HOST:PORT of the database")
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 0))
    parser.add_argument("--delay-ms", type=float, default=1.0, help="added in each direction")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.target, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
