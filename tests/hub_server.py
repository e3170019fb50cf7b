"""A small Hugging Face Hub server for the tests: the part of the Hub protocol ``huggingface_hub`` uses.

The real ``huggingface_hub`` client (``HfApi``, ``hf_hub_download``) talks to it over HTTP on 127.0.0.1, so the
tests exercise the same requests as against huggingface.co, without the internet. Standard library only.

Storage (under ``root``, git-less): ``objects/<sha256>`` holds every file content once (content-addressed);
``repos/<type>s/<namespace>/<name>.json`` holds a repo: visibility, refs (``main``, other branches,
``refs/pr/N``) and its commits, each a full snapshot ``{path: sha256}`` with its parent and message.

Endpoints (``{repo}`` is ``namespace/name``; ``{rev}`` a branch, ``refs/pr/N`` or a 40-hex commit id, URL-quoted):

=====================================================  =====================================================
``POST /api/repos/create``                             create (``{name, organization, visibility|private,
                                                       type}``); 409 if it exists. First commit holds
                                                       ``.gitattributes``, as on the Hub.
``POST /api/validate-yaml``                            checks the README front matter parses
``POST /api/{type}s/{repo}/preupload/{rev}``           every file ``uploadMode: "regular"`` (inline base64
                                                       in the commit, no LFS), ``oid`` = git blob sha1 of
                                                       the current file so unchanged files are skipped
``POST /api/{type}s/{repo}/commit/{rev}``              NDJSON: ``header`` (+``parentCommit``), ``file``
                                                       (base64), ``deletedFile``, ``deletedFolder``;
                                                       ``lfsFile`` is refused (400). ``?create_pr=1`` opens
                                                       ``refs/pr/N``.
``POST /api/{type}s/{repo}/branch/{branch}``           create a branch (``startingPoint``); 409 if it exists
``GET  /api/{type}s/{repo}[/revision/{rev}]``          repo info: ``id``, ``sha``, ``private``, ``siblings``
``GET  /api/{type}s/{repo}/tree/{rev}[/{path}]``       file listing (``?recursive=1``)
``GET  /api/{type}s/{repo}/refs``                      branches / pull requests
``GET|HEAD /{repo}/resolve/{rev}/{path}``              the file, with ``ETag`` (git blob sha1),
                                                       ``X-Repo-Commit``, ``Content-Length``
=====================================================  =====================================================

Errors carry the Hub's headers, which ``huggingface_hub.utils.hf_raise_for_status`` turns into its exceptions:
``X-Error-Code: RepoNotFound`` (404; 401 for a private repo read without a valid token, as the Hub does not
tell a private repo from a missing one), ``RevisionNotFound`` (404), ``EntryNotFound`` (404, with
``X-Repo-Commit`` so the client caches the absence). Writes need a token (401), on one's own namespace (403).
A token that is not known gives 401 "Invalid credentials in Authorization header".

Use::

    server = HubServer(tmp_dir, tokens={"hf_write": "alice"}).start()
    ...  # point huggingface_hub at server.url (see tests/test_hub.py)
    server.stop()

``server.requests`` logs ``(method, path, status)`` of every request, for tests that check what was fetched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, unquote, urlsplit

REPO_TYPES = ("model", "dataset", "space")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.body = body or {}


class HubStore:
    """Repositories on disk: content-addressed objects and one JSON file per repo."""

    def __init__(self, root):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ objects
    def put_object(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        path = self.root / "objects" / digest
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(content)
            tmp.replace(path)
        return digest

    def get_object(self, digest: str) -> bytes:
        return (self.root / "objects" / digest).read_bytes()

    # ------------------------------------------------------------------ repos
    def _repo_path(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{repo_type}s" / f"{repo_id}.json"

    def load(self, repo_type: str, repo_id: str) -> dict | None:
        path = self._repo_path(repo_type, repo_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, repo_type: str, repo_id: str, repo: dict) -> None:
        path = self._repo_path(repo_type, repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(repo, indent=1, sort_keys=True))
        tmp.replace(path)

    def create(self, repo_type: str, repo_id: str, private: bool) -> dict:
        repo = {"id": repo_id, "type": repo_type, "private": bool(private), "created": _now(), "refs": {},
                "commits": {}, "num_prs": 0}
        oid = self._add_commit(repo, None, {".gitattributes": self.put_object(GITATTRIBUTES)}, "initial commit")
        repo["refs"]["main"] = oid
        self.save(repo_type, repo_id, repo)
        return repo

    @staticmethod
    def _add_commit(repo: dict, parent: str | None, files: dict[str, str], message: str,
                    description: str = "") -> str:
        date = _now()
        oid = hashlib.sha1(json.dumps([parent, sorted(files.items()), message, date, len(repo["commits"])])
                           .encode()).hexdigest()
        repo["commits"][oid] = {"parent": parent, "files": files, "message": message, "description": description,
                                "date": date}
        return oid

    @staticmethod
    def resolve(repo: dict, revision: str) -> str:
        """Commit id of a branch / PR ref / (full) commit id, or HubError RevisionNotFound."""
        if revision in repo["refs"]:
            return repo["refs"][revision]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/"):] in repo["refs"]:
            return repo["refs"][revision[len("refs/heads/"):]]
        if COMMIT_RE.match(revision) and revision in repo["commits"]:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TinyHub/1.0"
    hub: "HubServer"  # set on the subclass made per server

    def log_message(self, format, *args):  # quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False,
              content_type: str = "application/json") -> None:
        # logged before answering: a client may go on (and a test read the log) once the answer arrives
        self.hub.requests.append((self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and self.command != "HEAD":  # a HEAD response never has a body (keep-alive)
            self.wfile.write(body)

    def _send_faulty(self, status: int, body: bytes, headers: dict, kind: str) -> None:
        """``drop``: the full Content-Length, half the body, then the connection closes; ``corrupt``: other bytes
        of the same length under the real ETag."""
        if kind == "corrupt":
            body = bytes(byte ^ 0xFF for byte in body)
        self.hub.requests.append((self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if kind == "corrupt" else body[: len(body) // 2])
        self.wfile.flush()
        if kind == "drop":
            self.close_connection = True
            self.connection.shutdown(2)  # socket.SHUT_RDWR

    def _json(self, status: int, payload, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _user(self) -> str | None:
        """The user of the bearer token; None without one; HubError 401 for an unknown token."""
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        token = auth.split(None, 1)[1].strip()
        if token not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.tokens[token]

    def _dispatch(self, head: bool = False) -> None:
        body = self._body() if self.command in ("POST", "PUT", "DELETE") else b""
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        fault = self.hub.take_fault(self.command, url.path)
        if fault is not None and fault["kind"] == "stall":
            time.sleep(fault["seconds"])
        if fault is not None and fault["kind"] == "status":
            self._json(fault["status"], {"error": "injected fault"}, {"X-Error-Message": "injected fault"})
            return
        try:
            with self.hub.store.lock:
                result = self.hub.route(self.command, url.path, query, body, self._user())
        except HubError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._json(err.status, {"error": err.message, **err.body}, headers)
            return
        except Exception as err:  # a bug in the server: say so (4xx, so that the client does not retry)
            self._json(418, {"error": f"test hub server failed: {type(err).__name__}: {err}"},
                       {"X-Error-Message": f"test hub server failed: {err}"})
            raise
        status, payload, headers = result
        if isinstance(payload, bytes) and fault is not None and fault["kind"] in ("drop", "corrupt") and not head:
            self._send_faulty(status, payload, headers, fault["kind"])
        elif isinstance(payload, bytes):
            self._send(status, payload, headers, head=head, content_type="application/octet-stream")
        else:
            self._json(status, payload, headers)

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch(head=True)

    def do_POST(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()


class HubServer:
    """The server: ``start()`` on a free port of 127.0.0.1 (threads), ``url``, ``stop()``."""

    def __init__(self, root, tokens: dict[str, str] | None = None):
        self.store = HubStore(root)
        self.tokens = dict(tokens or {})
        self.requests: list[tuple[str, str, int]] = []
        self.faults: list[dict] = []
        self.uploads: list[list[str]] = []  # per commit request: the paths whose content the client sent
        self._faults_lock = threading.Lock()
        self._httpd = None
        self._thread = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "HubServer":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="test-hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ fault injection
    def inject(self, kind: str, path: str, times: int = 1, method: str | None = None, status: int = 503,
               seconds: float = 0.0) -> None:
        """Misbehave on the next ``times`` requests whose path contains ``path`` (and of ``method``): answer
        ``status`` (``kind="status"``), send half the body then close (``"drop"``), send other bytes under the
        real ETag (``"corrupt"``) or wait ``seconds`` first (``"stall"``)."""
        with self._faults_lock:
            self.faults.append(dict(kind=kind, path=path, times=times, method=method, status=status,
                                    seconds=seconds))

    def take_fault(self, method: str, path: str) -> dict | None:
        with self._faults_lock:
            for fault in self.faults:
                if fault["path"] in path and fault["method"] in (None, method) and fault["times"] > 0:
                    fault["times"] -= 1
                    return dict(fault)
        return None

    # ------------------------------------------------------------------ helpers for tests
    def commits(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        """Commit ids from ``revision`` back to the first commit."""
        repo = self.store.load(repo_type, repo_id)
        oid, chain = HubStore.resolve(repo, revision), []
        while oid is not None:
            chain.append(oid)
            oid = repo["commits"][oid]["parent"]
        return chain

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        repo = self.store.load(repo_type, repo_id)
        snapshot = repo["commits"][HubStore.resolve(repo, revision)]["files"]
        return {path: self.store.get_object(digest) for path, digest in snapshot.items()}

    def put_files(self, repo_id: str, files: dict[str, bytes], message: str = "test files",
                  private: bool = False, repo_type: str = "model") -> str:
        """Commit ``files`` straight into the store (creating the repo): for hand-made (malicious) repos."""
        with self.store.lock:
            repo = self.store.load(repo_type, repo_id) or self.store.create(repo_type, repo_id, private)
            parent = repo["refs"]["main"]
            snapshot = dict(repo["commits"][parent]["files"])
            snapshot.update({path: self.store.put_object(content) for path, content in files.items()})
            repo["refs"]["main"] = HubStore._add_commit(repo, parent, snapshot, message)
            self.store.save(repo_type, repo_id, repo)
            return repo["refs"]["main"]

    # ------------------------------------------------------------------ routing
    def route(self, method: str, path: str, query: dict, body: bytes, user: str | None):
        parts = [unquote(p) for p in path.split("/") if p]
        if parts[:1] == ["api"]:
            if parts[1:3] == ["repos", "create"] and method == "POST":
                return self._create_repo(json.loads(body or b"{}"), user)
            if parts[1:2] == ["validate-yaml"] and method == "POST":
                return self._validate_yaml(json.loads(body or b"{}"))
            if len(parts) >= 4 and parts[1] in ("models", "datasets", "spaces"):
                repo_type = parts[1][:-1]
                repo_id, rest = "/".join(parts[2:4]), parts[4:]
                return self._repo_api(method, repo_type, repo_id, rest, query, body, user)
        else:
            # /{namespace}/{name}/resolve/{rev}/{path}  or  /{datasets|spaces}/{namespace}/{name}/resolve/...
            repo_type = "model"
            if parts[:1] in (["datasets"], ["spaces"]):
                repo_type, parts = parts[0][:-1], parts[1:]
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve_file(repo_type, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), user)
        raise HubError(404, f"Sorry, we can't find the page you are looking for ({method} {path}).")

    def _readable(self, repo_type: str, repo_id: str, user: str | None) -> dict:
        repo = self.store.load(repo_type, repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if repo["private"] and user != repo_id.split("/")[0]:
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, repo_type: str, repo_id: str, user: str | None) -> dict:
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repository", "RepoNotFound")
        repo = self._readable(repo_type, repo_id, user)
        if user != repo_id.split("/")[0]:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    # ------------------------------------------------------------------ endpoints
    def _create_repo(self, payload: dict, user: str | None):
        if user is None:
            raise HubError(401, "You must be authenticated to create a repository")
        namespace = payload.get("organization") or user
        name = payload.get("name") or ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name) or ".." in name:
            raise HubError(400, f"Invalid repository name {name!r}")
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repository under {namespace}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        if self.store.load(repo_type, repo_id) is not None:
            # the Hub answers 409 with the url, which HfApi.create_repo(exist_ok=True) reads
            raise HubError(409, f"You already created this {repo_type} repo", body={"url": url})
        private = payload.get("private", payload.get("visibility") == "private")
        self.store.create(repo_type, repo_id, bool(private))
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    @staticmethod
    def _validate_yaml(payload: dict):
        content = payload.get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
        if match:
            try:
                import yaml

                data = yaml.safe_load(match.group(1))
            except Exception as err:  # noqa: BLE001 - any YAML error is the user's
                return 400, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []}, {}
            if data is not None and not isinstance(data, dict):
                return 400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _repo_api(self, method, repo_type, repo_id, rest, query, body, user):
        action = rest[0] if rest else None
        if method == "GET" and action in (None, "revision"):
            repo = self._readable(repo_type, repo_id, user)
            revision = "/".join(rest[1:]) if action == "revision" else "main"
            return 200, self._info(repo, HubStore.resolve(repo, revision)), {}
        if method == "GET" and action == "tree":
            repo = self._readable(repo_type, repo_id, user)
            oid = HubStore.resolve(repo, rest[1] if len(rest) > 1 else "main")
            return 200, self._tree(repo, oid, "/".join(rest[2:]), query.get("recursive") in ("1", "true", "True")), {}
        if method == "GET" and action == "refs":
            repo = self._readable(repo_type, repo_id, user)
            refs = repo["refs"]
            branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o} for n, o in refs.items()
                        if not n.startswith("refs/")]
            prs = [{"name": n, "ref": n, "targetCommit": o} for n, o in refs.items() if n.startswith("refs/pr/")]
            return 200, {"branches": branches, "tags": [], "converts": [], "pullRequests": prs}, {}
        if method == "POST" and action == "preupload" and len(rest) >= 2:
            repo = self._writable(repo_type, repo_id, user)
            revision = "/".join(rest[1:])
            snapshot = {}
            if revision in repo["refs"] or COMMIT_RE.match(revision):
                snapshot = repo["commits"][HubStore.resolve(repo, revision)]["files"]
            elif query.get("create_pr") != "1":
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            files = []
            for entry in json.loads(body)["files"]:
                digest = snapshot.get(entry["path"])
                oid = git_blob_sha1(self.store.get_object(digest)) if digest else None
                files.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
            return 200, {"files": files, "commitOid": repo["refs"].get(revision)}, {}
        if method == "POST" and action == "commit" and len(rest) >= 2:
            repo = self._writable(repo_type, repo_id, user)
            return self._commit(repo_type, repo_id, repo, "/".join(rest[1:]), body, query.get("create_pr") == "1")
        if method == "POST" and action == "branch" and len(rest) >= 2:
            repo = self._writable(repo_type, repo_id, user)
            branch = "/".join(rest[1:])
            if branch in repo["refs"]:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            if branch.startswith("refs/") or not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
                raise HubError(400, f"Invalid reference for a branch: {branch}")
            start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
            repo["refs"][branch] = HubStore.resolve(repo, start)
            self.store.save(repo_type, repo_id, repo)
            return 200, {}, {}
        raise HubError(404, f"Sorry, we can't find the page you are looking for ({method} {action}).")

    def _info(self, repo: dict, oid: str) -> dict:
        commit = repo["commits"][oid]
        return {
            "id": repo["id"], "modelId": repo["id"], "author": repo["id"].split("/")[0], "sha": oid,
            "private": repo["private"], "disabled": False, "gated": False, "createdAt": repo["created"],
            "lastModified": commit["date"], "tags": [], "downloads": 0, "likes": 0,
            "siblings": [{"rfilename": path} for path in sorted(commit["files"])],
        }

    def _tree(self, repo: dict, oid: str, prefix: str, recursive: bool) -> list[dict]:
        files = repo["commits"][oid]["files"]
        prefix = prefix.strip("/")
        entries, folders = [], set()
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            relative = path[len(prefix) + 1:] if prefix else path
            if "/" in relative and not recursive:
                folders.add((f"{prefix}/" if prefix else "") + relative.split("/")[0])
                continue
            if recursive:
                parents = PurePosixPath(relative).parents
                folders.update((f"{prefix}/" if prefix else "") + str(p) for p in parents if str(p) != ".")
            content = self.store.get_object(files[path])
            entries.append({"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)})
        if prefix and not entries and not folders:
            raise HubError(404, f"{prefix} does not exist", "EntryNotFound")
        return [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()}
                for f in sorted(folders)] + entries

    def _commit(self, repo_type, repo_id, repo, revision, body: bytes, create_pr: bool):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header")
        header = lines[0]["value"]
        base = HubStore.resolve(repo, revision)
        parent_commit = header.get("parentCommit")
        if parent_commit is not None and parent_commit != base:
            raise HubError(412, f"A commit has happened since {parent_commit}: {revision} is at {base}")
        snapshot = dict(repo["commits"][base]["files"])
        self.uploads.append(sorted(item.get("value", {}).get("path", "") for item in lines[1:]
                                   if item.get("key") == "file"))  # what the client sent in this commit
        for item in lines[1:]:
            key, value = item.get("key"), item.get("value", {})
            path = value.get("path", "")
            if key in ("file", "deletedFile", "deletedFolder", "lfsFile"):
                _check_repo_path(path)
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                snapshot[path] = self.store.put_object(base64.b64decode(value["content"]))
            elif key == "deletedFile":
                if path not in snapshot:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del snapshot[path]
            elif key == "deletedFolder":
                folder = path.rstrip("/") + "/"
                for name in [n for n in snapshot if n.startswith(folder)]:
                    del snapshot[name]
            elif key == "lfsFile":
                raise HubError(400, f"{path}: LFS uploads are not supported by this test server (preupload "
                                    f"answers uploadMode 'regular')")
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        oid = HubStore._add_commit(repo, base, snapshot, header.get("summary") or "", header.get("description", ""))
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        pr_url = None
        if create_pr:
            repo["num_prs"] += 1
            repo["refs"][f"refs/pr/{repo['num_prs']}"] = oid
            pr_url = f"{self.url}/{prefix}{repo_id}/discussions/{repo['num_prs']}"
        else:
            ref = revision[len("refs/heads/"):] if revision.startswith("refs/heads/") else revision
            if ref not in repo["refs"]:
                raise HubError(400, f"{revision} is not a branch: commits go to a branch or a pull request")
            repo["refs"][ref] = oid
        self.store.save(repo_type, repo_id, repo)
        return 200, {"commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid,
                     "pullRequestUrl": pr_url, "success": True}, {}

    def _resolve_file(self, repo_type, repo_id, revision, path, user):
        repo = self._readable(repo_type, repo_id, user)
        oid = HubStore.resolve(repo, revision)
        files = repo["commits"][oid]["files"]
        if path not in files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": oid})
        content = self.store.get_object(files[path])
        headers = {"ETag": f'"{git_blob_sha1(content)}"', "X-Repo-Commit": oid,
                   "Content-Disposition": f'inline; filename="{quote(PurePosixPath(path).name)}"',
                   "Accept-Ranges": "none"}
        return 200, content, headers


def _check_repo_path(path: str) -> None:
    pure = PurePosixPath(path)
    if not path or path.startswith("/") or "\\" in path or any(part in ("..", ".") for part in pure.parts):
        raise HubError(400, f"Invalid path in repository: {path!r}")


if __name__ == "__main__":  # a manual server: python tests/hub_server.py /tmp/hub [token=user ...]
    import sys
    import tempfile

    root = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tiny-hub-")
    tokens = dict(arg.split("=", 1) for arg in sys.argv[2:]) or {"hf_test": "user"}
    server = HubServer(root, tokens).start()
    print(f"serving {root} at {server.url} (tokens: {tokens}); HF_ENDPOINT={server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
