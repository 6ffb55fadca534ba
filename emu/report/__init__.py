"""Report: tables, kubectl's views and describe texts, logs."""
