"""The `watch` stream: a snapshot, then each event as the ledger records it (issue 14, section 1)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rsub.wire.protocol import Connection, encode, make_request
from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import submit_shell

pytestmark = pytest.mark.e2e


def sock(rsubd: Rsubd) -> str:
    return str(Path(rsubd.env["XDG_RUNTIME_DIR"]) / "rsub" / "rsubd.sock")


def watch(rsubd: Rsubd, **fields: Any) -> list[dict[str, Any]]:
    with Connection(sock(rsubd), timeout=90) as conn:
        frames = list(conn.stream("watch", **fields))
    assert all(f["ok"] for f in frames), frames[-1]
    assert all(f.get("more") for f in frames[:-1]) and not frames[-1].get("more")
    return [f["result"] for f in frames]


def test_a_watch_starts_with_a_snapshot_then_sends_each_change_and_ends_when_all_are_final(
        rsubd: Rsubd, workdir: Path) -> None:
    cluster = submit_shell(rsubd, workdir, "sleep 1; exit $(Process)", "queue 3")
    frames = watch(rsubd, ids=[str(cluster)], jobs=True, until_final=True, timeout=60)
    snapshot = frames[0]
    assert snapshot["type"] == "snapshot" and snapshot["complete"] is True
    assert {j["id"] for j in snapshot["jobs"]} == {f"{cluster}.{p}@local" for p in range(3)}
    assert isinstance(snapshot["since"], int) and snapshot["clusters"][0]["total"] == 3
    changes = [f for f in frames if f["type"] == "change"]
    events = [c["event"] for c in changes]
    assert events == sorted(events) and all(e > snapshot["since"] for e in events)
    final = {c["id"]: c for c in changes if c["to"] == "retrieved"}
    assert {i: c["exit_code"] for i, c in final.items()} == {f"{cluster}.{p}@local": p for p in range(3)}
    assert any(f["type"] == "clusters" for f in frames)
    end = frames[-1]
    assert end["type"] == "end" and end["done"] is True
    summary = end["clusters"][0]
    assert (summary["total"], summary["done"], summary["exit_nonzero"]) == (3, 3, 2)
    assert summary["states"] == {"retrieved": 3}


def test_a_watcher_that_comes_back_with_since_misses_nothing(rsubd: Rsubd, workdir: Path) -> None:
    first = watch(rsubd, timeout=0)  # nothing submitted yet: where the record stands
    since = first[0]["since"]
    cluster = submit_shell(rsubd, workdir, "true", "queue 2")
    wait_until(lambda: set(rsubd.states(str(cluster)).values()) == {"retrieved"}, 60, "both retrieved")
    replay = watch(rsubd, since=since, timeout=0)
    changes = [(f["id"], f["from"], f["to"]) for f in replay if f["type"] == "change"]
    assert changes[0] == (f"{cluster}@local", None, "spooling")  # the submit, one event for the cluster
    for proc in range(2):
        path = [to for ident, _, to in changes if ident == f"{cluster}.{proc}@local"]
        assert path[-1] == "retrieved" and ("running" in path or "completed" in path), changes
    assert replay[-1]["type"] == "end" and replay[-1]["done"] is False  # timeout 0: no waiting for more


def test_fifty_watchers_at_once_and_a_slow_reader_all_end_right(rsubd: Rsubd, workdir: Path) -> None:
    results: list[list[dict[str, Any]] | BaseException] = []
    lock = threading.Lock()
    cluster_box: list[int] = []

    def one() -> None:
        """Watch everything, as `rsub watch` does, and leave once the cluster is all home (as a user quits)."""
        frames: list[dict[str, Any]] | BaseException = []
        try:
            with Connection(sock(rsubd), timeout=90) as conn:
                for reply in conn.stream("watch", timeout=120):
                    assert reply["ok"], reply
                    frames.append(reply["result"])
                    # A summary is the state now, maybe ahead of the changes still to come: count those.
                    home = sum(1 for f in frames if f["type"] == "change" and f["to"] == "retrieved"
                               and cluster_box and f["cluster"] == cluster_box[0])
                    if (home == 20 and reply["result"]["type"] == "clusters") or not reply.get("more"):
                        break
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            frames = e
        with lock:
            results.append(frames)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    # The slow reader: asks to be resynced past 2 events, and reads its first frames one a second.
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(sock(rsubd))
    raw.sendall(encode(make_request("watch", ids=[], jobs=True, coalesce_after=2, timeout=90)))
    reader = raw.makefile("rb")
    first = json.loads(reader.readline())
    assert first["result"]["type"] == "snapshot"
    cluster_box.append(submit_shell(rsubd, workdir, "true", "queue 20"))
    cluster = cluster_box[0]
    wait_until(lambda: set(rsubd.states(str(cluster)).values()) == {"retrieved"}, 60, "all twenty retrieved")
    slow: list[dict[str, Any]] = []
    while True:
        frame = json.loads(reader.readline())
        slow.append(frame["result"])
        if not frame.get("more") or any(s["id"] == f"{cluster}@local" and s["done"] == 20
                                        for s in frame["result"].get("clusters", [])):
            break
        if len(slow) < 3:
            time.sleep(1.0)
    reader.close()
    raw.close()
    for t in threads:
        t.join(60)
    assert len(results) == 50 and not [r for r in results if isinstance(r, BaseException)]
    for frames in results:
        assert isinstance(frames, list)
        summaries = {s["id"]: s for f in frames if "clusters" in f for s in f["clusters"]}
        assert summaries[f"{cluster}@local"]["states"] == {"retrieved": 20}, frames[-1]
        assert sum(1 for f in frames if f["type"] == "change" and f["to"] == "retrieved") == 20
    resyncs = [f for f in slow if f["type"] == "resync"]
    assert resyncs and all(r["skipped"] > 2 for r in resyncs)  # it got the state, not every event
    known = {j["id"]: j["state"] for f in slow for j in f.get("jobs", [])}
    assert {known[f"{cluster}.{p}@local"] for p in range(20)} == {"retrieved"}


def test_a_watch_of_a_job_rsub_does_not_have_is_an_error(rsubd: Rsubd) -> None:
    with Connection(sock(rsubd), timeout=30) as conn:
        frames = list(conn.stream("watch", ids=["999.0"]))
    assert len(frames) == 1 and frames[0]["ok"] is False and frames[0]["error"]["code"] == "not_found"


def test_a_request_sent_during_a_watch_ends_it_and_is_answered(rsubd: Rsubd) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(30)
        raw.connect(sock(rsubd))
        reader = raw.makefile("rb")
        raw.sendall(encode(make_request("watch", ids=[])))  # no timeout: it would go on for ever
        assert json.loads(reader.readline())["result"]["type"] == "snapshot"
        raw.sendall(encode({"v": 1, "id": "next", "kind": "ping"}))
        end = json.loads(reader.readline())
        assert end["result"] == {"type": "end", "done": False, "reason": "superseded"} and "more" not in end
        pong = json.loads(reader.readline())
        assert pong["id"] == "next" and pong["result"]["pong"] is True
        reader.close()
