"""What an entity's extract reads in each DAG, by name: a module of its own so a DAG file that names a mode
parses without importing the steps (pandas, pyarrow, the hooks), which only its tasks need."""

from __future__ import annotations

INITIAL, INCREMENTAL, REPLAY, RECONCILE = "initial", "incremental", "replay", "reconcile"
