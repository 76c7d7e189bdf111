-- One PostgreSQL instance, two databases: Prefect's (created from POSTGRES_DB) and MLflow's.
CREATE DATABASE mlflow;
