"""The audit trail: security events, their stores, redaction, alerts, anomaly detection, metrics."""
