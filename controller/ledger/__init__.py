"""The ledger: what was deployed, every sync run and its outcomes (SQLite by default, Postgres by URL)."""

from controller.ledger.store import Ledger, RepoStatus

__all__ = ["Ledger", "RepoStatus"]
