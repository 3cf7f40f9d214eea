"""The Marketo <-> Dynamics sync library that every DAG of this project imports.

Airflow puts plugins/ on sys.path, so DAG files import it as `dynamics_sync`; `pip install -e .` does the
same for tests and registers the hooks' connection types (see provider.py).
"""

from dynamics_sync.memory import use_system_arrow_pool

use_system_arrow_pool()  # before any module of the library imports pandas (and so pyarrow)
