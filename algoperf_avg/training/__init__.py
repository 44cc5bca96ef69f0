"""Training: the fixed-budget runner, its clocks, logs, checkpoints, sharding and tuning."""
