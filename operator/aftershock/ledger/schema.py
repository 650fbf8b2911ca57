"""The ledger's schema as an ordered list of migrations; ``PRAGMA user_version`` counts them.

Rule: a migration, once released, never changes. A file written by an older operator is
brought forward by running the migrations it lacks, each in its own transaction together
with the new ``user_version``; a file with a higher version than `MIGRATIONS` knows was
written by a newer operator and is refused (see ADR 0002).

That is why migration 1 spells out its milestone names and outcome values instead of reading
`model.MILESTONES` and `model.Outcome`: if those grow, the change needs a new migration
(``ALTER TABLE attempts ADD COLUMN <name>_wall REAL`` ...), and `missing_milestone_columns`,
checked at every open and by the unit tests, makes the omission fail loudly instead of
drifting. The queries, on the other hand, are generated from `model.MILESTONES`.

Migration 1's names are also TiKV's first chain, which the export's documented columns keep
(`COLUMN_MILESTONES`); since migration 6 a subject's milestones (TiKV's ``store_up`` too) are
rows of ``subject_milestones``, and the ``store_up_*`` columns stay empty (SQLite cannot drop
a column that a table CHECK names).
"""

from __future__ import annotations

from collections.abc import Iterable

#: ``PRAGMA application_id``: marks a SQLite file as an aftershock ledger ("AFTS").
APPLICATION_ID = 0x41465453

_V1_MILESTONES = (
    "gate_passed",
    "kill_sent",
    "kill_acked",
    "first_unhealthy",
    "victim_gone",
    "replacement_created",
    "replacement_scheduled",
    "replacement_ready",
    "store_up",
    "recovered",
)
#: Every milestone that has columns in ``attempts``, in column order (migrations 1 and 2): the
#: one list of TiKV's v1 milestones, which the export's documented columns follow.
COLUMN_MILESTONES: tuple[str, ...] = (*_V1_MILESTONES, "relapsed")
_V1_OUTCOMES = ("recovered", "unrecovered", "interrupted", "infra_error", "dry_run")
_V1_COMPLETING_OUTCOMES = ("recovered", "unrecovered", "dry_run")


def milestone_columns(name: str) -> tuple[str, str]:
    """The two ``attempts`` columns of one milestone: wall-clock and monotonic offset."""
    return f"{name}_wall", f"{name}_offset"


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _v1() -> tuple[str, ...]:
    columns: list[str] = []
    checks: list[str] = []
    for name in _V1_MILESTONES:
        wall, offset = milestone_columns(name)
        columns += [f"{wall} REAL", f"{offset} REAL"]
        checks.append(f"CHECK (({wall} IS NULL) = ({offset} IS NULL))")
    milestone_columns_sql = ",\n            ".join(columns)
    milestone_checks_sql = ",\n            ".join(checks)
    return (
        f"PRAGMA application_id = {APPLICATION_ID}",
        """
        CREATE TABLE campaigns (
            uid TEXT PRIMARY KEY NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            spec TEXT NOT NULL,
            requested_trials INTEGER NOT NULL CHECK (requested_trials >= 0),
            seed TEXT NOT NULL,
            phase TEXT NOT NULL,
            verdict TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL
        )
        """,
        "CREATE INDEX campaigns_by_name ON campaigns (namespace, name, created_at)",
        f"""
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            campaign_uid TEXT NOT NULL REFERENCES campaigns (uid),
            trial_index INTEGER NOT NULL CHECK (trial_index >= 0),
            attempt INTEGER NOT NULL CHECK (attempt >= 1),
            victims TEXT NOT NULL,
            victim_seed TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            outcome TEXT CHECK (outcome IN ({_sql_list(_V1_OUTCOMES)})),
            initial_state TEXT NOT NULL DEFAULT '{{}}',
            final_state TEXT NOT NULL DEFAULT '{{}}',
            error TEXT,
            {milestone_columns_sql},
            {milestone_checks_sql},
            CHECK ((outcome IS NULL) = (finished_at IS NULL)),
            UNIQUE (campaign_uid, trial_index, attempt),
            UNIQUE (id, campaign_uid, trial_index)
        )
        """,
        "CREATE INDEX attempts_in_flight ON attempts (campaign_uid) WHERE outcome IS NULL",
        # Only completed trials live here, so the primary key is the database's own refusal of
        # a second completed trial with the same index. The composite key ties each row to an
        # attempt of the same campaign and index.
        """
        CREATE TABLE trials (
            campaign_uid TEXT NOT NULL REFERENCES campaigns (uid),
            trial_index INTEGER NOT NULL,
            attempt_id INTEGER NOT NULL UNIQUE,
            PRIMARY KEY (campaign_uid, trial_index),
            FOREIGN KEY (attempt_id, campaign_uid, trial_index)
                REFERENCES attempts (id, campaign_uid, trial_index)
        ) WITHOUT ROWID
        """,
        f"""
        CREATE TRIGGER trials_need_a_completing_outcome BEFORE INSERT ON trials
        WHEN (SELECT outcome FROM attempts WHERE id = NEW.attempt_id) IS NULL
          OR (SELECT outcome FROM attempts WHERE id = NEW.attempt_id)
             NOT IN ({_sql_list(_V1_COMPLETING_OUTCOMES)})
        BEGIN
            SELECT RAISE(ABORT, 'trials holds only attempts with a completing outcome');
        END
        """,
        """
        CREATE TRIGGER attempts_outcome_is_final BEFORE UPDATE OF outcome ON attempts
        WHEN OLD.outcome IS NOT NULL
        BEGIN
            SELECT RAISE(ABORT, 'an attempt''s outcome is final once recorded');
        END
        """,
    )


def _v2() -> tuple[str, ...]:
    """The ``relapsed`` milestone: unhealthy again within the settle window after recovering."""
    wall, offset = milestone_columns("relapsed")
    return (
        f"ALTER TABLE attempts ADD COLUMN {wall} REAL",
        f"ALTER TABLE attempts ADD COLUMN {offset} REAL",
    )


def _v3() -> tuple[str, ...]:
    """When a Campaign was deleted. Before this, a Campaign deleted mid-run stayed ``Running``
    in the ledger for ever; now its row says ``Deleted`` with the time (a finished one keeps
    its phase and gains the time)."""
    return ("ALTER TABLE campaigns ADD COLUMN deleted_at REAL",)


def _v4() -> tuple[str, ...]:
    """Runs: a Campaign re-run by its ``aftershock.dev/run`` annotation keeps every run. Each
    run is a ``campaigns`` row of its own (its ``uid`` is the run's id: the Campaign's uid for
    run 1, so every row written before this migration is run 1 of its Campaign), and ``runs``
    ties it to its Campaign, its number and the annotation's value that started it. A
    ``campaigns`` row without a ``runs`` row is run 1 with no token. No foreign key: the run is
    recorded when the operator decides to start it, before the runner records its Campaign row."""
    return (
        """
        CREATE TABLE runs (
            run_uid TEXT PRIMARY KEY NOT NULL,
            campaign_uid TEXT NOT NULL,
            run INTEGER NOT NULL CHECK (run >= 1),
            token TEXT NOT NULL,
            UNIQUE (campaign_uid, run)
        )
        """,
    )


def _v5() -> tuple[str, ...]:
    """Milestones a subject names for itself (etcd's ``leader_elected``, the write probe's
    ``writes_failed``): a row each, so a new subject kind needs no migration. The engine's own
    milestones keep their columns in ``attempts``."""
    return (
        """
        CREATE TABLE subject_milestones (
            attempt_id INTEGER NOT NULL REFERENCES attempts (id),
            name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 63),
            wall REAL NOT NULL,
            "offset" REAL NOT NULL,
            PRIMARY KEY (attempt_id, name)
        ) WITHOUT ROWID
        """,
    )


def _v6() -> tuple[str, ...]:
    """Attempts in subject-neutral terms (ADR 0010). A victim's subject id is ``member_id``,
    whatever the subject (TiKV's store id, another kind's member id); it was ``store_id``:
    every recorded victim is rewritten in place, so readers know one key only. TiKV's
    ``store_up`` is a subject milestone like etcd's: moved from its columns to
    ``subject_milestones`` (the columns stay, empty)."""
    wall, offset = milestone_columns("store_up")
    return (
        f"""
        INSERT INTO subject_milestones (attempt_id, name, wall, "offset")
        SELECT id, 'store_up', {wall}, {offset} FROM attempts WHERE {wall} IS NOT NULL
        """,
        f"UPDATE attempts SET {wall} = NULL, {offset} = NULL WHERE {wall} IS NOT NULL",
        """
        UPDATE attempts SET victims = (
            SELECT json_group_array(json(renamed)) FROM (
                SELECT json_remove(
                    json_set(v.value, '$.member_id', json_extract(v.value, '$.store_id')), '$.store_id'
                ) AS renamed
                FROM json_each(attempts.victims) AS v ORDER BY v.key
            )
        )
        WHERE EXISTS (SELECT 1 FROM json_each(attempts.victims) AS v
                      WHERE json_type(v.value, '$.store_id') IS NOT NULL)
        """,
    )


def _v7() -> tuple[str, ...]:
    """Schedules, trends and retention (ADR 0015). ``schedule_ticks``: every tick of a
    Campaign's schedule the operator acted on (a run started, skipped by ``Forbid``, a run
    replaced, missed past its deadline): the catch-up after a restart reads the last one, so a
    tick is never run twice. ``run_judgements``: each finished run against the previous run and
    the baseline run, by `aftershock compare`'s test. ``run_summaries``: what a pruned run's
    attempts added up to; its attempts are deleted, its ``campaigns`` and ``runs`` rows stay."""
    return (
        # The tick a scheduled run was started for (NULL: started by its annotation or on creation).
        "ALTER TABLE runs ADD COLUMN tick REAL",
        """
        CREATE TABLE schedule_ticks (
            campaign_uid TEXT NOT NULL,
            tick REAL NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('started', 'skipped', 'replaced', 'missed')),
            run INTEGER,
            recorded_at REAL NOT NULL,
            PRIMARY KEY (campaign_uid, tick)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE run_judgements (
            run_uid TEXT NOT NULL,
            against TEXT NOT NULL CHECK (against IN ('previous', 'baseline')),
            against_run INTEGER NOT NULL,
            verdict TEXT NOT NULL CHECK (verdict IN ('Improved', 'Regressed', 'NoChange', 'NotCompared')),
            p_value REAL,
            median_difference REAL,
            low REAL,
            high REAL,
            message TEXT NOT NULL,
            judged_at REAL NOT NULL,
            PRIMARY KEY (run_uid, against)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE run_summaries (
            run_uid TEXT PRIMARY KEY NOT NULL,
            recovered INTEGER NOT NULL,
            unrecovered INTEGER NOT NULL,
            completed INTEGER NOT NULL,
            p50 REAL,
            p95 REAL,
            max REAL,
            mean REAL,
            attempts INTEGER NOT NULL,
            pruned_at REAL NOT NULL
        ) WITHOUT ROWID
        """,
    )


def _v8() -> tuple[str, ...]:
    """The ledger's own identity, random and fixed at creation (ADR 0016): subject Leases name
    the ledger their holder runs from, so the one process that holds this ledger can tell its
    own crashed predecessor's Lease from another operator's."""
    return (
        """
        CREATE TABLE ledger_identity (
            only INTEGER PRIMARY KEY CHECK (only = 1),
            id TEXT NOT NULL CHECK (length(id) = 32)
        )
        """,
        "INSERT INTO ledger_identity (only, id) VALUES (1, lower(hex(randomblob(16))))",
    )


def _v9() -> tuple[str, ...]:
    """Faults that stay until healed (issue 19): the intent, written before the fault is
    injected, then when it was injected and when it was healed. A row with ``healed_at`` NULL
    is a fault that may still be in place: resume, the runner's end and the sweeper heal it."""
    return (
        """
        CREATE TABLE faults (
            attempt_id INTEGER PRIMARY KEY NOT NULL REFERENCES attempts (id),
            campaign_uid TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 63),
            namespace TEXT NOT NULL,
            chaos TEXT NOT NULL,
            victims TEXT NOT NULL,
            details TEXT NOT NULL DEFAULT '{}',
            intended_at REAL NOT NULL,
            injected_at REAL,
            heal_due REAL,
            healed_at REAL,
            heal_note TEXT
        )
        """,
        "CREATE INDEX faults_open ON faults (campaign_uid) WHERE healed_at IS NULL",
    )


def _v10() -> tuple[str, ...]:
    """Alerts delivered by Alertmanager to the operator's receiver (issue 20): every
    notification of an alert that matched a Campaign's ``spec.detection``, in the order received
    (``seq``), attributed to the trial whose fault it followed. The ``alert_firing`` and
    ``alert_resolved`` milestones derived from them are rows of ``subject_milestones``."""
    return (
        """
        CREATE TABLE alert_notifications (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            attempt_id INTEGER NOT NULL REFERENCES attempts (id),
            campaign_uid TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            alertname TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
            labels TEXT NOT NULL,
            starts_at REAL NOT NULL,
            ends_at REAL,
            received_at REAL NOT NULL,
            "offset" REAL NOT NULL
        )
        """,
        "CREATE INDEX alert_notifications_by_campaign ON alert_notifications (campaign_uid, seq)",
    )


#: Migration ``i`` (1-based) is ``MIGRATIONS[i - 1]``: statements run in one transaction.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _v1(), _v2(), _v3(), _v4(), _v5(), _v6(), _v7(), _v8(), _v9(), _v10(),
)  # fmt: skip

SCHEMA_VERSION = len(MIGRATIONS)


def missing_milestone_columns(existing_columns: Iterable[str], milestones: Iterable[str]) -> list[str]:
    """Milestones with no columns in ``attempts``: a migration is missing for them."""
    have = set(existing_columns)
    return [m for m in milestones if not set(milestone_columns(m)) <= have]
