"""One module per model architecture; `lvm_core.models.builder` registers them by name."""
