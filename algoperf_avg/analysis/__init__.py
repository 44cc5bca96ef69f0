"""Analysis: reading logs, scoring (time-to-target, profiles, benchmark score) and plots."""
