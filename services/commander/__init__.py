"""commander: per-host control of programs (process and systemd backends), jobs, logs and scans."""
