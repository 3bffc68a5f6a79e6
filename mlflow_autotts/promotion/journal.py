"""The gatekeeper's durable journal: deliveries accepted, how each was decided, what passed.

A delivery is written here (committed, synchronous) before the receiver answers 2xx, so a
gatekeeper that dies mid-gate finds it still ``pending`` when it starts again and decides
it then; its id is the primary key, so MLflow's retries and a replay within the timestamp
window are recognised as the same delivery and decided once. ``passes`` is the gate's own
record of the versions it promoted: the registry's tags and aliases can be edited by any
user of the UI, so "this version passed the gate" is read from here, not from them.

One SQLite file (stdlib ``sqlite3``, WAL, ``synchronous=FULL``) in the state directory,
one connection shared by the receiver and the deciding threads behind a lock: the writes
are a few small rows per delivery. No MLflow here.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow_autotts.errors import AutoTTSError, safe_text
from mlflow_autotts.promotion.webhooks import AliasChange

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version TEXT NOT NULL,
    sent INTEGER NOT NULL,
    received REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'decided')),
    attempts INTEGER NOT NULL DEFAULT 0,
    decision TEXT,
    reason TEXT,
    subject TEXT,
    decided REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (state, seq);
CREATE TABLE IF NOT EXISTS passes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version TEXT NOT NULL,
    delivery TEXT NOT NULL,
    passed REAL NOT NULL
);
"""
_COLUMNS = "seq, id, name, alias, version, sent, received, state, attempts, decision, reason, subject, last_error"


class JournalError(AutoTTSError):
    """The journal cannot be opened or written (the receiver answers 503, so MLflow retries)."""


@dataclass(frozen=True)
class Outcome:
    """How a delivery was decided."""

    decision: str
    """``promoted``, ``refused``, ``error`` (the gate could not run), ``reverted`` (@champion
    moved back), ``removed`` (@champion taken off, nothing passed before), ``kept`` (nothing to
    do) or ``superseded`` (the alias has moved on since)."""
    reason: str
    """The sentence the version's tags show."""
    subject: str | None = None
    """The version the decision is about (its tags say why), if any."""


@dataclass(frozen=True)
class Entry:
    """One journaled delivery."""

    seq: int
    id: str
    name: str
    alias: str
    version: str
    sent: int
    received: float
    state: str
    attempts: int
    decision: str | None
    reason: str | None
    subject: str | None
    last_error: str | None

    @property
    def change(self) -> AliasChange:
        return AliasChange(self.name, self.alias, self.version)


class Journal:
    """The journal at ``path`` (created with its directory if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise JournalError(f"{self.path}: journal schema {version}, this autotts reads {SCHEMA_VERSION}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute(f"SELECT {_COLUMNS} FROM deliveries LIMIT 1").fetchall()  # another table of that name?
        except (sqlite3.DatabaseError, OSError, JournalError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, JournalError):
                raise
            if isinstance(exc, OSError):
                raise JournalError(f"{self.path}: cannot open the journal ({safe_text(exc, 200)})") from None
            raise JournalError(f"{self.path}: not a gatekeeper journal ({safe_text(exc, 200)}); move it away "
                               "or give another --state-dir") from None
        self._db = db

    def _execute(self, sql: str, args: tuple = ()) -> tuple[list[tuple], int]:
        """(rows, rows changed) of one statement, committed when it returns (autocommit)."""
        with self._lock:
            try:
                cursor = self._db.execute(sql, args)
                return cursor.fetchall(), cursor.rowcount
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: {safe_text(exc, 200)}") from None

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self._execute(sql, args)[0]

    # ------------------------------------------------------------------ deliveries
    def accept(self, delivery_id: str, change: AliasChange, sent: int, now: float | None = None) -> tuple[Entry, bool]:
        """(the journaled delivery, whether it is new): written and committed before returning."""
        received = time.time() if now is None else now
        _, inserted = self._execute(
            "INSERT OR IGNORE INTO deliveries (id, name, alias, version, sent, received, state) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending')",
            (delivery_id, change.name, change.alias, change.version, sent, received))
        entry = self.get(delivery_id)
        assert entry is not None  # inserted now or before; rows are never deleted
        return entry, inserted == 1

    def get(self, delivery_id: str) -> Entry | None:
        rows = self._run(f"SELECT {_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,))
        return Entry(*rows[0]) if rows else None

    def pending(self) -> list[Entry]:
        """Deliveries accepted and not decided yet, oldest first."""
        return [Entry(*r) for r in self._run(f"SELECT {_COLUMNS} FROM deliveries WHERE state = 'pending' ORDER BY seq")]

    def entries(self, name: str | None = None) -> list[Entry]:
        """Every journaled delivery (of model ``name``), oldest first."""
        if name is None:
            rows = self._run(f"SELECT {_COLUMNS} FROM deliveries ORDER BY seq")
        else:
            rows = self._run(f"SELECT {_COLUMNS} FROM deliveries WHERE name = ? ORDER BY seq", (name,))
        return [Entry(*r) for r in rows]

    def begin(self, delivery_id: str) -> int:
        """Count an attempt at deciding the delivery (before it starts); returns the count."""
        self._run("UPDATE deliveries SET attempts = attempts + 1 WHERE id = ?", (delivery_id,))
        return self._run("SELECT attempts FROM deliveries WHERE id = ?", (delivery_id,))[0][0]

    def finish(self, delivery_id: str, outcome: Outcome, now: float | None = None) -> None:
        self._run("UPDATE deliveries SET state = 'decided', decision = ?, reason = ?, subject = ?, decided = ? "
                  "WHERE id = ?", (outcome.decision, outcome.reason, outcome.subject,
                                   time.time() if now is None else now, delivery_id))

    def failed(self, delivery_id: str, error: str) -> None:
        """An attempt that raised: the delivery stays pending (decided at the next start)."""
        self._run("UPDATE deliveries SET last_error = ? WHERE id = ?", (error[:2000], delivery_id))

    def counts(self) -> dict[str, int]:
        return dict(self._run("SELECT state, count(*) FROM deliveries GROUP BY state"))

    # ---------------------------------------------------------------------- passes
    def record_pass(self, name: str, alias: str, version: str, delivery_id: str, now: float | None = None) -> None:
        """``version`` of ``name`` passed the gate for ``alias`` (written before the alias moves)."""
        self._run("INSERT INTO passes (name, alias, version, delivery, passed) VALUES (?, ?, ?, ?, ?)",
                  (name, alias, version, delivery_id, time.time() if now is None else now))

    def passed(self, name: str, alias: str) -> list[str]:
        """Versions that passed the gate for ``alias`` of ``name``, the latest pass first."""
        rows = self._run("SELECT version, max(seq) AS last FROM passes WHERE name = ? AND alias = ? "
                         "GROUP BY version ORDER BY last DESC", (name, alias))
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["Entry", "Journal", "JournalError", "Outcome", "SCHEMA_VERSION"]
