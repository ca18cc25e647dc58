"""Sync stages: git source, plan, apply and the reconcile loop (coming with the sync engine)."""
