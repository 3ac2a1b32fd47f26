"""A stand-in processor for the example worker: POST a message, get 200 after some work.

Listens on 127.0.0.1 only: the sidecar consumer in the same pod is its one client.
GET /healthz answers 200. Env: PROCESSOR_PORT (8080), WORK_SECONDS per message (0.2).
On SIGTERM it stops accepting and exits once in-flight requests are answered.
"""

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PROCESSOR_PORT", "8080"))
WORK_SECONDS = float(os.environ.get("WORK_SECONDS", "0.2"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(200 if self.path == "/healthz" else 404, {"ok": self.path == "/healthz"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(WORK_SECONDS)  # the "work"
        self._answer(200, {"ok": True, "bytes": len(body)})

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per message would drown the logs


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = False  # server_close() joins in-flight requests
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"processor listening on 127.0.0.1:{PORT}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
