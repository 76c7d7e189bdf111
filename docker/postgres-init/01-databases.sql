-- One PostgreSQL instance, two databases: Prefect's (created from POSTGRES_DB) and MLflow's.
CREATE DATABASE mlflow;
-- MLflow's basic-auth app: accounts, roles and grants.
CREATE DATABASE mlflow_auth;
