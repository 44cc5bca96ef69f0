"""The workload kit: what every workload is built from (losses, data, configs, parameter types)."""
