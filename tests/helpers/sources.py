"""Helpers of the source tests (tests/sources/): the shared data they read and a static file server that stands in
for the upstream of a download."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from helpers import ESCONV_DIR

FAILED_JSON = ESCONV_DIR / "FailedESConv.json"
SPLIT_INDICES = ESCONV_DIR / "split_indices.json"


class LocalServer:
    """A static file server on an ephemeral port that counts the requests it receives."""

    def __init__(self, root: Path):
        self.root = root
        self.paths: list[str] = []
        lock = threading.Lock()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                with lock:
                    server.paths.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.running = True

    @property
    def requests(self) -> int:
        return len(self.paths)

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.running = False
