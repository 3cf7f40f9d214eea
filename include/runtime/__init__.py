"""Running the project on one machine: its own Airflow home, the sandboxes, `make run` and the demo."""
