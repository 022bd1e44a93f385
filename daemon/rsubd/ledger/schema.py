"""The ledger's schema: the numbered migrations, and the tables and columns the rest of the ledger names.

Migration N is `MIGRATIONS[N - 1]`; `PRAGMA user_version` records the last one applied.
A migration is only ever appended: a ledger written by an older rsubd must always open.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from rsub.wire.vocabulary import ACTIVE_STATES

# The states as SQL literals (constants, never user input).
ACTIVE_SQL = "state IN (" + ", ".join(f"'{s}'" for s in ACTIVE_STATES) + ")"
TRACKED_SQL = f"({ACTIVE_SQL} OR (state = 'retrieved' AND marked_at IS NULL))"
# The final states and the time a history sorts by, spelled exactly as the partial index
# jobs_finished (migration 5) spells them: SQLite uses it only for a query that says the same.
FINAL_SQL = "state IN ('retrieved', 'removed', 'failed')"
FINISHED_AT = "coalesce(retrieved_at, completed_at, updated_at)"

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE clusters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL UNIQUE,
        schedd TEXT NOT NULL,
        cluster INTEGER,
        tag TEXT NOT NULL,
        state TEXT NOT NULL,
        description TEXT NOT NULL,
        submitted_description TEXT NOT NULL,
        submit_dir TEXT NOT NULL,
        submit_file TEXT,
        num_procs INTEGER,
        error TEXT,
        created_at REAL NOT NULL,
        submitted_at REAL
    );
    CREATE UNIQUE INDEX clusters_schedd_cluster ON clusters (schedd, cluster);
    CREATE TABLE jobs (
        schedd TEXT NOT NULL,
        cluster INTEGER NOT NULL,
        proc INTEGER NOT NULL,
        cluster_row INTEGER NOT NULL REFERENCES clusters (id),
        state TEXT NOT NULL,
        job_status INTEGER,
        hold_reason TEXT,
        hold_code INTEGER,
        exit_code INTEGER,
        exit_signal INTEGER,
        remove_reason TEXT,
        error TEXT,
        iwd TEXT,
        submitted_at REAL NOT NULL,
        completed_at REAL,
        retrieved_at REAL,
        marked_at REAL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (schedd, cluster, proc)
    );
    CREATE INDEX jobs_state ON jobs (schedd, state);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        schedd TEXT NOT NULL,
        cluster INTEGER NOT NULL,
        proc INTEGER,
        from_state TEXT,
        to_state TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX events_job ON events (schedd, cluster, proc);
    """,
    # 2: indexes for a ledger of 100,000 jobs. `rsub status 12` reads one cluster in the
    # order it is shown; a poll finds its tracked jobs, retrieved-but-unmarked ones included,
    # from the index alone. (Partial indexes on the active jobs were tried: each state change
    # then costs twice as much to write, which a poll of 10,000 changes cannot afford.)
    """
    CREATE INDEX jobs_cluster ON jobs (cluster, schedd, proc);
    DROP INDEX jobs_state;
    CREATE INDEX jobs_state ON jobs (schedd, state, marked_at);
    """,
    # 3: a retrieve's intent, recorded before the schedd is asked: a repeat after a crash
    # knows it is one, and sets aside what the first attempt (or the user since) wrote.
    """
    ALTER TABLE jobs ADD COLUMN retrieve_started_at REAL;
    """,
    # 4: retrieves that fail. A failure that may heal (a full disk, a locked file) is retried
    # after a per-job backoff (retrieve_retry_at); one that cannot (the path cannot exist) pauses
    # the job's retrieves (retrieve_paused) until `rsub retrieve`. `attention` says what a person
    # must do; `retrieved_to`, where `rsub retrieve --dest` put the output.
    """
    ALTER TABLE jobs ADD COLUMN retrieve_failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN retrieve_failing_since REAL;
    ALTER TABLE jobs ADD COLUMN retrieve_retry_at REAL;
    ALTER TABLE jobs ADD COLUMN retrieve_paused INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN attention TEXT;
    ALTER TABLE jobs ADD COLUMN retrieved_to TEXT;
    """,
    # 5: holds asked for while the schedd still held the job for spooling (code 16): the schedd
    # answers "already done" and releases the job once its input is in, so rsubd keeps the
    # user's intent here and holds the job when a poll sees the spool hold over.
    """
    CREATE TABLE pending_holds (
        schedd TEXT NOT NULL,
        cluster INTEGER NOT NULL,
        proc INTEGER NOT NULL,
        reason TEXT NOT NULL,
        asked_at REAL NOT NULL,
        PRIMARY KEY (schedd, cluster, proc)
    );
    """,
    # 6: DAGs. A DAG is its DAGMan job's cluster (clusters, jobs) plus where it came from and
    # where its files go home (dags), and each node with its attempts and exit codes (dag_nodes).
    # `progress` is the DAGMan job's DAG_* attributes as last seen (JSON); `placed_at`, when every
    # node's files went home from the staging directory; `cleaned_at`, when that directory went.
    """
    CREATE TABLE dags (
        cluster_row INTEGER PRIMARY KEY REFERENCES clusters (id),
        schedd TEXT NOT NULL,
        cluster INTEGER NOT NULL,
        dag_file TEXT NOT NULL,
        staging_dir TEXT NOT NULL,
        rescue_of INTEGER,
        job_status INTEGER,
        dag_status INTEGER,
        progress TEXT,
        error TEXT,
        placed_at REAL,
        cleaned_at REAL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX dags_cluster ON dags (schedd, cluster);
    CREATE TABLE dag_nodes (
        cluster_row INTEGER NOT NULL REFERENCES clusters (id),
        node TEXT NOT NULL,
        home TEXT NOT NULL,
        submit_file TEXT NOT NULL,
        retries INTEGER NOT NULL DEFAULT 0,
        parents TEXT NOT NULL DEFAULT '',
        live_job TEXT,
        live_status INTEGER,
        attempts TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (cluster_row, node)
    );
    """,
    # 7: what a job really used, from the last ad a poll saw (USAGE_FIELDS: seconds, MB, KiB as the
    # schedd gives them, and run_start, its JobCurrentStartDate); the hold policy's releases of it
    # and when the next may be; when a cluster's "done" was told; and `lineage`: which job each proc
    # of a resubmitted cluster replaces.
    """
    ALTER TABLE jobs ADD COLUMN wall_time REAL;
    ALTER TABLE jobs ADD COLUMN user_cpu REAL;
    ALTER TABLE jobs ADD COLUMN sys_cpu REAL;
    ALTER TABLE jobs ADD COLUMN memory_mb INTEGER;
    ALTER TABLE jobs ADD COLUMN rss_kb INTEGER;
    ALTER TABLE jobs ADD COLUMN disk_kb INTEGER;
    ALTER TABLE jobs ADD COLUMN job_starts INTEGER;
    ALTER TABLE jobs ADD COLUMN shadow_starts INTEGER;
    ALTER TABLE jobs ADD COLUMN request_memory INTEGER;
    ALTER TABLE jobs ADD COLUMN request_disk INTEGER;
    ALTER TABLE jobs ADD COLUMN request_cpus INTEGER;
    ALTER TABLE jobs ADD COLUMN run_start REAL;
    ALTER TABLE jobs ADD COLUMN auto_releases INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN auto_release_at REAL;
    ALTER TABLE clusters ADD COLUMN done_told_at REAL;
    CREATE TABLE lineage (
        new_row INTEGER NOT NULL REFERENCES clusters (id),
        new_proc INTEGER NOT NULL,
        schedd TEXT NOT NULL,
        old_cluster INTEGER NOT NULL,
        old_proc INTEGER NOT NULL,
        PRIMARY KEY (new_row, new_proc)
    );
    CREATE INDEX lineage_old ON lineage (schedd, old_cluster, old_proc);
    """,
    # 8: a year in the ledger. `rsub history` walks the final jobs newest first through
    # jobs_finished instead of sorting a million rows (partial: a poll's changes to active jobs
    # never touch it). Compaction (ledger/compaction.py) replaces an old final job's events by
    # the times the views read from them, kept on its row. job_counts, kept by triggers, holds
    # the jobs per schedd and state: `rsub q` and `rsub history` say "1,000 of 900,000" without
    # counting 900,000 rows. (Statements are split where sqlite3.complete_statement says.)
    """
    CREATE INDEX jobs_finished ON jobs (coalesce(retrieved_at, completed_at, updated_at))
        WHERE state IN ('retrieved', 'removed', 'failed');
    ALTER TABLE jobs ADD COLUMN kept_run_started_at REAL;
    ALTER TABLE jobs ADD COLUMN kept_run_left_at REAL;
    ALTER TABLE jobs ADD COLUMN kept_finished_at REAL;
    ALTER TABLE jobs ADD COLUMN compacted_at REAL;
    CREATE TABLE job_counts (schedd TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (schedd, state)) WITHOUT ROWID;
    INSERT INTO job_counts (schedd, state, n) SELECT schedd, state, count(*) FROM jobs GROUP BY schedd, state;
    CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_counts (schedd, state, n) VALUES (new.schedd, new.state, 1)
            ON CONFLICT (schedd, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
        UPDATE job_counts SET n = n - 1 WHERE schedd = old.schedd AND state = old.state;
    END;
    CREATE TRIGGER job_counts_update AFTER UPDATE OF schedd, state ON jobs
        WHEN old.state IS NOT new.state OR old.schedd IS NOT new.schedd BEGIN
        UPDATE job_counts SET n = n - 1 WHERE schedd = old.schedd AND state = old.state;
        INSERT INTO job_counts (schedd, state, n) VALUES (new.schedd, new.state, 1)
            ON CONFLICT (schedd, state) DO UPDATE SET n = n + 1;
    END;
    """,
    # 9: the token profile each submit went out with, so `rsub resubmit` (and the hold policy's) sends
    # the jobs again with the same credential, not the schedd's default one.
    """
    ALTER TABLE clusters ADD COLUMN token_profile TEXT;
    """,
    # 10: the submits that made no cluster (being settled, interrupted, failed), which every `rsub q`, `status`
    # and `history` lists after its jobs: through this index, not a scan of every cluster (1.3 ms a view at a
    # year's 10,000 clusters, 0.01 ms now). A few rows: a submit's row leaves it once the schedd made its cluster.
    """
    CREATE INDEX clusters_unmade ON clusters (id) WHERE cluster IS NULL;
    """,
)

# What a job used, as the ledger's columns, from the ad attribute of each (polling/observing.py reads them).
USAGE_FIELDS = ("wall_time", "user_cpu", "sys_cpu", "memory_mb", "rss_kb", "disk_kb", "job_starts", "shadow_starts",
                "request_memory", "request_disk", "request_cpus", "run_start")

# Fields a poll may change on a job row.
MUTABLE_FIELDS = ("state", "job_status", "hold_reason", "hold_code", "exit_code", "exit_signal",
                  "remove_reason", "error", "completed_at", "retrieved_at", "marked_at", "retrieve_started_at",
                  "retrieve_failures", "retrieve_failing_since", "retrieve_retry_at", "retrieve_paused",
                  "attention", "retrieved_to", *USAGE_FIELDS, "auto_releases", "auto_release_at")

LEDGER_TABLES = {"meta", "clusters", "jobs", "events"}

# A row as the ledger's reading methods return it: column name to value (handlers read `row["state"]`).
Row = dict[str, Any]


@dataclass(frozen=True)
class JobSelector:
    """Which jobs a client means: a cluster, a cluster.proc, optionally on one schedd."""

    cluster: int
    proc: int | None = None
    schedd: str | None = None


class TrackedJob(NamedTuple):
    """A job a poll looks at: (cluster, proc, *TRACKED_FIELDS), read straight from the ledger.

    A tuple, not a dataclass: a poll of 100,000 jobs compares slices of them with
    what each ad says, and a NamedTuple is as fast and as small as a plain tuple.
    """

    cluster: int
    proc: int
    state: str
    job_status: int | None
    hold_reason: str | None
    hold_code: int | None
    exit_code: int | None
    exit_signal: int | None
    remove_reason: str | None
    completed_at: float | None
    marked_at: float | None
    retrieve_started_at: float | None
    # No retrieve before this time: a failed one's backoff, or inf while paused for a person
    # (retrieve_paused). One column computed by the query, not the four it comes from: each
    # column read costs a poll of 100,000 jobs about 25 ms, and the rest is read only on failure.
    retrieve_not_before: float | None



# What a poll compares with the schedd's ads, in the order `Ledger.tracked` selects them.
TRACKED_FIELDS: tuple[str, ...] = TrackedJob._fields[2:]
# What the query selects for each TrackedJob field (a column, or the expression that computes it).
TRACKED_COLUMNS: tuple[str, ...] = tuple(
    "CASE WHEN retrieve_paused THEN 9e999 ELSE retrieve_retry_at END" if f == "retrieve_not_before" else f
    for f in TrackedJob._fields)


def key_terms(keys: Sequence[tuple[int, int]], *, cluster: str = "cluster", proc: str = "proc",
              size: int = 400) -> Iterator[tuple[str, list[Any]]]:
    """`(cluster = ? AND proc = ?) OR ...` for chunks of (cluster, proc) keys, with the chunk's arguments.

    Chunks keep each statement well under SQLite's limit of bound parameters.
    """
    for start in range(0, len(keys), size):
        chunk = keys[start:start + size]
        yield " OR ".join([f"({cluster} = ? AND {proc} = ?)"] * len(chunk)), [v for key in chunk for v in key]
