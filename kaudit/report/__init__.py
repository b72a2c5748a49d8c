"""Reports: JSON (schema docs/report-v2.schema.json) and kernel-style text."""
