#!/usr/bin/env python3
"""A TCP proxy that adds a fixed delay in each direction, for scripts/bench.sh.

Scenario 6 of the benchmark suite (issue 6) pushes through a link with a 20 ms
round trip, because fleets are not on loopback. Where `tc netem` is available
bench.sh delays a network namespace's loopback instead; where it is not (as on
these machines: no sch_netem), it starts this proxy between the client and one
sshd.

Every chunk read from one side is held until DELAY ms after it was read, then
written to the other side, in order; so every round trip through the proxy costs
2 x DELAY more, while throughput is not limited. Unlike netem it does not delay
TCP's own ACKs (the proxy acknowledges locally), so it models the application
round trips (SCP acks, channel opens, rsync's exchanges), not TCP slow start.

Safety: it only listens on and connects to loopback addresses, and it exits by
itself after --lifetime seconds, so a forgotten proxy cannot outlive the run.
Prints `listening HOST PORT` on stdout once it accepts connections.
"""

import argparse
import asyncio
import ipaddress
import socket
import sys

CHUNK = 256 * 1024
# Chunks held per direction; beyond this the reader waits (back-pressure).
QUEUE_CHUNKS = 256


def loopback(addr: str) -> str:
    """Refuses anything but a loopback literal (NETWORK RULE: loopback only)."""
    if not ipaddress.ip_address(addr).is_loopback:
        sys.exit(f"delay-proxy: {addr} is not a loopback address; refusing")
    return addr


def nodelay(writer: asyncio.StreamWriter) -> None:
    """ssh and hostsync set TCP_NODELAY; the proxy must not add Nagle delays."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def pump(reader, writer, delay: float) -> None:
    """Copies reader to writer, each chunk `delay` seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_CHUNKS)

    async def feed():
        while True:
            try:
                data = await reader.read(CHUNK)
            except (ConnectionError, OSError):
                data = b""
            await queue.put((loop.time() + delay, data))
            if not data:
                return

    async def deliver():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(feed(), deliver())
    except (ConnectionError, OSError):
        pass


async def serve(args) -> None:
    async def handle(c_reader, c_writer):
        try:
            s_reader, s_writer = await asyncio.open_connection(args.target_host, args.target_port)
        except OSError:
            c_writer.close()
            return
        nodelay(c_writer)
        nodelay(s_writer)
        try:
            await asyncio.gather(
                pump(c_reader, s_writer, args.delay_ms / 1000.0),
                pump(s_reader, c_writer, args.delay_ms / 1000.0),
            )
        finally:
            for w in (c_writer, s_writer):
                w.close()

    server = await asyncio.start_server(handle, args.listen_host, args.listen_port)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {args.listen_host} {port}", flush=True)
    async with server:
        await asyncio.sleep(args.lifetime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen-host", type=loopback, default="127.0.0.1")
    p.add_argument("--listen-port", type=int, default=0, help="0: any free port")
    p.add_argument("--target-host", type=loopback, required=True)
    p.add_argument("--target-port", type=int, required=True)
    p.add_argument("--delay-ms", type=float, default=10.0, help="added in each direction")
    p.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds")
    args = p.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
