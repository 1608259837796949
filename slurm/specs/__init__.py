"""Built-in sweep specs, addressed by name: the file stem with "_" written as "-"."""
