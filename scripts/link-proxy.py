#!/usr/bin/env python3
"""A TCP proxy that behaves like a slow WAN link and counts what crosses it, for scripts/bench.sh.

The slow-link scenarios of the benchmark suite (issue 19) push through a link of
50 Mbit/s with a 20 ms round trip, and compare the bytes each tool moves. This
proxy sits between the client and one sshd and models, per direction, a link of
--rate-mbit with --delay-ms of propagation delay: a chunk read at time t starts
on the wire when the link is free, takes len/rate to cross, and is written to
the other side --delay-ms after that, in order. A bounded queue (about 1 MiB per
direction) gives back-pressure, as a router's buffer does. Like
scripts/delay-proxy.py it does not delay TCP's own ACKs (each side's TCP talks
to the proxy), so TCP slow start is not modelled; application round trips and
the link's capacity are.

It counts the bytes it reads from each side. After every connection it closes,
it rewrites --counters with one line: `UP DOWN CLOSED` (client-to-server bytes,
server-to-client bytes, connections closed so far), so a caller can read the
bytes of one run once CLOSED has grown.

Safety: it only listens on and connects to loopback addresses, and it exits by
itself after --lifetime seconds, so a forgotten proxy cannot outlive the run.
Prints `listening HOST PORT` on stdout once it accepts connections.
"""

import argparse
import asyncio
import ipaddress
import os
import socket
import sys

CHUNK = 16 * 1024
# Chunks held per direction; beyond this the reader waits (back-pressure).
QUEUE_CHUNKS = 64

COUNTS = {"up": 0, "down": 0, "closed": 0}


def loopback(addr: str) -> str:
    """Refuses anything but a loopback literal (NETWORK RULE: loopback only)."""
    if not ipaddress.ip_address(addr).is_loopback:
        sys.exit(f"link-proxy: {addr} is not a loopback address; refusing")
    return addr


def nodelay(writer: asyncio.StreamWriter) -> None:
    """ssh and hostsync set TCP_NODELAY; the proxy must not add Nagle delays."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def write_counters(path: str) -> None:
    """Replaces the counters file in one rename, so a reader never sees half a line."""
    if not path:
        return
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(f"{COUNTS['up']} {COUNTS['down']} {COUNTS['closed']}\n")
    os.replace(tmp, path)


async def pump(reader, writer, rate: float, delay: float, key: str) -> None:
    """Copies reader to writer through a link of `rate` bytes/s and `delay` s."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_CHUNKS)
    free = [0.0]  # when the link is next free

    async def feed():
        while True:
            try:
                data = await reader.read(CHUNK)
            except (ConnectionError, OSError):
                data = b""
            now = loop.time()
            start = max(now, free[0])
            done = start + len(data) / rate
            free[0] = done
            COUNTS[key] += len(data)
            await queue.put((done + delay, data))
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
    rate = args.rate_mbit * 1e6 / 8
    delay = args.delay_ms / 1000.0

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
                pump(c_reader, s_writer, rate, delay, "up"),
                pump(s_reader, c_writer, rate, delay, "down"),
            )
        finally:
            for w in (c_writer, s_writer):
                w.close()
            COUNTS["closed"] += 1
            write_counters(args.counters)

    write_counters(args.counters)
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
    p.add_argument("--rate-mbit", type=float, default=50.0, help="per direction")
    p.add_argument("--delay-ms", type=float, default=10.0, help="added in each direction")
    p.add_argument("--counters", default="", help="file for `UP DOWN CLOSED`")
    p.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds")
    args = p.parse_args()
    if args.rate_mbit <= 0:
        sys.exit("link-proxy: --rate-mbit must be more than 0")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
