"""Notifier: which changes make calls, and how many."""

from __future__ import annotations

from collections.abc import Sequence

from rsubd.services.notify import Change, Notifier, NotifyConfig, cluster_setting


def notifier(own: dict[int, str] | None = None) -> tuple[Notifier, list[tuple[list[str], dict[str, str]]]]:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def spawn(argv: Sequence[str], env: dict[str, str]) -> None:
        calls.append((list(argv), env))

    n = Notifier(NotifyConfig(command=("tell",)), per_cluster=lambda _s, c: (own or {}).get(c), spawn=spawn)
    return n, calls


def test_one_job_one_call_with_id_state_and_exit_code() -> None:
    n, calls = notifier()
    assert n.jobs_changed([Change("local", 7, 0, "completed", exit_code=3)]) == 1
    argv, env = calls[0]
    assert argv == ["tell", "7.0@local", "completed", "3"]
    assert env["RSUB_EXIT_CODE"] == "3" and env["RSUB_COUNT"] == "1"


def test_a_crowd_of_one_cluster_is_one_call_and_unasked_states_none() -> None:
    n, calls = notifier()
    changes = [Change("local", 7, p, "retrieved") for p in range(1000)] + [Change("local", 7, 0, "idle")]
    assert n.jobs_changed(changes) == 1
    argv, env = calls[0]
    assert argv[:3] == ["tell", "7.*@local", "retrieved"]
    assert env["RSUB_COUNT"] == "1000" and env["RSUB_PROC"] == ""


def test_a_clusters_own_setting_wins() -> None:
    n, calls = notifier({7: "none", 8: "my-tool --loud"})
    n.jobs_changed([Change("local", 7, 0, "held"), Change("local", 8, 0, "held", hold_reason="why")])
    assert [c[0] for c in calls] == [["my-tool", "--loud", "8.0@local", "held", ""]]
    assert calls[0][1]["RSUB_HOLD_REASON"] == "why"


def test_cluster_setting_reads_the_description() -> None:
    assert cluster_setting('executable = a\nMy.RsubNotify = "none"\nqueue\n') == "none"
    assert cluster_setting("executable = a\nqueue\n") is None


def test_each_clusters_setting_is_read_once_and_only_the_recent_ones_are_kept() -> None:
    from rsubd.services.notify import ClusterSettings

    reads: list[int] = []

    def descriptions(schedd: str, clusters: list[int]) -> dict[int, tuple[str, str]]:
        reads.extend(clusters)
        return {c: (f'My.RsubNotify = "cmd{c}"\nqueue\n', "/") for c in clusters if c != 3}

    settings = ClusterSettings(descriptions, size=2)
    assert settings("local", 1) == "cmd1" and settings("local", 1) == "cmd1" and reads == [1]
    assert settings("local", 3) is None and settings("local", 3) is None and reads == [1, 3]  # none: kept too
    settings("local", 1)  # the most recent again: 3 is now the oldest
    settings("local", 2)
    assert reads == [1, 3, 2]
    settings("local", 1)  # still kept
    settings("local", 3)  # read again: it had gone
    assert reads == [1, 3, 2, 3]
