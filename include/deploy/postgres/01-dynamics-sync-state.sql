-- The state store's own database on the metadata DB's server (docker-compose.yaml mounts this folder as
-- /docker-entrypoint-initdb.d). PostgreSQL runs it once, when it initialises an empty volume, as
-- POSTGRES_USER (airflow), who therefore owns it. Its tables come from the state store's Alembic
-- migrations, which airflow-init runs (include/deploy/init.py). AIRFLOW_CONN_DYNAMICS_SYNC_STATE names it.
CREATE DATABASE dynamics_sync;
