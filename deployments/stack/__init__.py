"""Helpers of deployments/stack.sh: configuration rendering and registry accounts for the package-based stack."""
