"""A minimal local Hugging Face Hub endpoint for tests: create repo, preupload, commit, branch.

Answers every file as a "regular" (inline base64) upload, stores what it receives, records the
Authorization headers, and can fail the first N commits to test resuming an upload.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self, fail_commits: int = 0):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.auth_headers: list[str] = []
        self.fail_commits = fail_commits
        self.commits = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                hub.auth_headers.append(self.headers.get("Authorization", ""))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:2] == ["api", "validate-yaml"]:
                    return self._reply(200, {"errors": [], "warnings": []})
                if parts[:3] == ["api", "repos", "create"]:
                    req = json.loads(body)
                    repo = f"{req.get('organization') or 'user'}/{req['name']}"
                    hub.repos.setdefault(repo, {})
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if parts[0] == "api" and len(parts) >= 6 and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                if parts[0] == "api" and len(parts) >= 6 and parts[4] == "commit":
                    repo = f"{parts[2]}/{parts[3]}"
                    hub.commits += 1
                    if hub.commits <= hub.fail_commits:
                        return self._reply(400, {"error": "injected failure"})  # 5xx would be retried by the client
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item.get("key") == "file":
                            v = item["value"]
                            hub.repos.setdefault(repo, {})[v["path"]] = base64.b64decode(v["content"])
                    return self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/abc123", "commitOid": "abc123"})
                if parts[0] == "api" and len(parts) >= 6 and parts[4] == "branch":
                    return self._reply(200, {})
                return self._reply(404, {"error": f"not handled: {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
