"""Orchestration infrastructure of the flows: build slots (leases), stop signals and the temporary API
server, run hooks (alerts, dead runs), the shard task runner and the build's progress artifact."""
