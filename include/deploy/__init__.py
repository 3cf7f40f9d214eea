"""The docker-compose deployment's own steps (docker-compose.yaml runs them as `python -m include.deploy.<step>`).

secrets_init generates the deployment's secrets once, init prepares volumes, the metadata DB, the pools and
the state store, dynamics_sandbox serves the Dynamics sandbox under its service name, and demo_connections
(demo profile) turns the sandboxes' /_sandbox/info into Airflow connections.
"""
