"""The server of `pespot review` over real HTTP (issue 21): the page and its API, byte ranges for the video, and what
it refuses: other Host names, requests without the page's token, paths outside its routes, bad saves. Then the
command itself: it prints where it listens, serves, and stops cleanly on SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import write_video

from pespot.review.load import load_session
from pespot.review.server import ReviewServer


@pytest.fixture
def server(tmp_path):
    (tmp_path / "class.txt").write_text("serve\nhit\n")
    write_video(tmp_path / "a.mp4", 20, faststart=True, bframes=0)
    write_video(tmp_path / "b.mkv", 10)
    session = load_session([str(tmp_path / "class.txt"), str(tmp_path / "a.mp4"), str(tmp_path / "b.mkv")],
                           progress=False)
    srv = ReviewServer(session, cache_dir=tmp_path / "cache")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            token: bool = True) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=30)
    hdrs = dict(headers or {})
    if token:
        hdrs.setdefault("X-Pespot-Token", srv.token)
    conn.request(method, path, body=body, headers=hdrs)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


def test_the_page_carries_its_token_and_the_api_needs_it(server):
    status, _, page = request(server, "GET", "/", token=False)
    assert status == 200 and server.token.encode() in page and b"{{TOKEN}}" not in page
    assert request(server, "GET", "/api/state", token=False)[0] == 403
    assert request(server, "GET", "/api/state", headers={"X-Pespot-Token": "guess"})[0] == 403
    status, _, body = request(server, "GET", "/api/state")
    state = json.loads(body)
    assert status == 200 and state["classes"] == ["serve", "hit"] and len(state["videos"]) == 2
    assert request(server, "GET", "/static/app.js", token=False)[0] == 200


@pytest.mark.parametrize("path", ["/static/../session.py", "/static/%2e%2e/session.py", "/../../etc/passwd",
                                  "/media/../../a.mp4?t=TOKEN", "/media/a.mp4?t=TOKEN", "/static/", "/a.mp4", "/api/media/2", "/api/media/-1",
                                  "/api/scores/0"])
def test_nothing_outside_the_routes_is_served(server, path):
    status, _, body = request(server, "GET", path.replace("TOKEN", server.token))
    assert status == 404, (path, body)


def test_another_host_name_is_refused(server):
    # a page of another site reaching 127.0.0.1 through its own DNS name (DNS rebinding) is turned away
    assert request(server, "GET", "/", headers={"Host": "evil.example:80"}, token=False)[0] == 403
    assert request(server, "GET", "/api/state", headers={"Host": "evil.example"})[0] == 403
    assert request(server, "GET", "/", headers={"Host": f"localhost:{server.server_address[1]}"})[0] == 200


def test_the_video_is_served_by_number_with_byte_ranges(server, tmp_path):
    status, _, body = request(server, "GET", "/api/media/1")  # the mkv: transcoded once into the cache
    info = json.loads(body)
    assert status == 200 and info["transcoded"] and info["num_frames"] == 10
    path = info["url"]
    assert request(server, "GET", path.split("?")[0])[0] == 403  # a video request needs the token too
    data = next((tmp_path / "cache").glob("*.mp4")).read_bytes()
    status, headers, part = request(server, "GET", path, headers={"Range": "bytes=10-109"})
    assert status == 206 and part == data[10:110] and headers["Content-Range"] == f"bytes 10-109/{len(data)}"
    status, _, tail = request(server, "GET", path, headers={"Range": "bytes=-16"})
    assert status == 206 and tail == data[-16:]
    assert request(server, "GET", path)[2] == data
    assert request(server, "GET", path, headers={"Range": f"bytes={len(data)}-"})[0] == 416
    status, _, body = request(server, "GET", "/api/media/0")  # the mp4 plays as it is
    assert json.loads(body)["transcoded"] is False and json.loads(body)["rate"] == [25, 1]


def test_saves_need_the_token_and_the_current_version(server, tmp_path):
    state = json.loads(request(server, "GET", "/api/state")[2])
    labels = [{"video": v["video"], "labels": [{"uid": "n1", "frame": 3, "label": "hit"}]} for v in state["videos"]]
    body = json.dumps({"version": 0, "videos": labels}).encode()
    headers = {"Content-Type": "application/json"}
    # a cross-site form can post, but cannot add the token header: refused, nothing written
    assert request(server, "POST", "/api/save", body, headers, token=False)[0] == 403
    assert not (tmp_path / "labels.json").exists()
    assert request(server, "POST", "/api/save", b"{not json", headers)[0] == 400
    status, _, reply = request(server, "POST", "/api/save", body, headers)
    assert status == 200 and json.loads(reply)["version"] == 1
    status, _, reply = request(server, "POST", "/api/save", body, headers)  # a second page, still at version 0
    assert status == 409 and json.loads(reply)["version"] == 1 and "another page" in json.loads(reply)["error"]
    bad = json.dumps({"version": 1, "videos": [dict(labels[0], labels=[{"uid": "x", "frame": 99, "label": "hit"}]),
                                               labels[1]]}).encode()
    status, _, reply = request(server, "POST", "/api/save", bad, headers)
    assert status == 400 and "frame 99 outside [0, 20)" in json.loads(reply)["error"]
    assert request(server, "POST", "/api/other", body, headers)[0] == 404
    saved = json.loads((tmp_path / "labels.json").read_text())
    assert [[(e["frame"], e["label"]) for e in v["events"]] for v in saved] == [[(3, "hit")], [(3, "hit")]]


def test_the_command_serves_until_sigterm(tmp_path):
    (tmp_path / "class.txt").write_text("serve\nhit\n")
    write_video(tmp_path / "a.mp4", 12, faststart=True, bframes=0)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "pespot", "review", str(tmp_path / "class.txt"),
                             str(tmp_path / "a.mp4"), "--json", "--cache", str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = json.loads(proc.stdout.readline())
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", ready["url"])
        assert ready["videos"] == 1 and str(tmp_path / "labels.json") in ready["outputs"]
        port = int(ready["url"].rsplit(":", 1)[1].strip("/"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in err


def test_the_command_names_a_bad_source_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    (tmp_path / "notes.doc").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "pespot", "review", str(tmp_path / "notes.doc")],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [(f"pespot review: error: {tmp_path / 'notes.doc'}: not a video file, "
                                                "frame folder, split or prediction JSON, run folder, class.txt or "
                                                "Labels-v2.json")]
