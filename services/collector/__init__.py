"""collector: samples this host (psutil, NVML) and publishes frames, process snapshots, host info."""
