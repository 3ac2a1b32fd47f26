"""Wait until a TCP port is open (or closed): the example worker's lifecycle hooks.

    python wait_port.py open   127.0.0.1:8080 --timeout 60   # postStart: processor is up
    python wait_port.py closed 127.0.0.1:9100 --timeout 85   # preStop: consumer has exited

Exit 0 when the port is in the wanted state, 1 on timeout.
"""

import argparse
import socket
import sys
import time


def is_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("state", choices=("open", "closed"))
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds")
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    deadline = time.monotonic() + args.timeout
    while is_open(host, int(port)) != (args.state == "open"):
        if time.monotonic() >= deadline:
            print(f"{args.address} not {args.state} after {args.timeout:g}s", file=sys.stderr)
            return 1
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
