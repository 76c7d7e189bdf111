"""The test suite: unit/ (the library, one process), integration/ (real Prefect and MLflow in one process),
system/ (real servers, subprocesses, kills); fixtures/ holds what they share."""
