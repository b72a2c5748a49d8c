"""Reports: JSON (schema docs/report-v1.schema.json) and kernel-style text."""
