#!/usr/bin/env python3
"""Run the stand-in API server on 127.0.0.1 until SIGTERM or SIGINT.

    python3 tests/kmock/serve.py --port P [--ready-file F] [--bookmark-interval S]

With --port 0 the kernel picks a free port. Once the port accepts
connections, the port number is written to the ready file (written whole
under a temporary name, then renamed, so a reader never sees half of it) and a
line `lash-apiserver: listening on http://127.0.0.1:P` goes to stdout.
"""

import argparse
import asyncio
import os
import signal
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import kmock  # noqa: E402

from lash_apiserver import LashApiServer  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, required=True, help='TCP port on 127.0.0.1 (0: any free one)')
    parser.add_argument('--ready-file', help='write the port here once connections are accepted')
    parser.add_argument('--bookmark-interval', type=float, default=1.0, help='seconds between watch bookmarks')
    return parser.parse_args()


def write_ready_file(path: str, port: int) -> None:
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(f'{port}\n')
    os.replace(tmp, path)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    api = LashApiServer(bookmark_interval=args.bookmark_interval)
    async with api, kmock.Server(api, host='127.0.0.1', port=args.port) as server:
        if args.ready_file:
            write_ready_file(args.ready_file, server.port)
        print(f'lash-apiserver: listening on http://127.0.0.1:{server.port}', flush=True)
        await stop.wait()
        api.stop()
    print('lash-apiserver: stopped', flush=True)


def main() -> None:
    asyncio.run(serve(parse_args()))


if __name__ == '__main__':
    main()
