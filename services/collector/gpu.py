"""GPUs through NVML (the `pynvml` module of nvidia-ml-py, or anything with the same functions).

No driver or no GPU: `available` is False, frames carry `gpus: []`, and one log line says why.
Each per-GPU call is guarded on its own, so one unsupported query (power on a consumer card,
processes on a MIG slice) costs only that field, never the rest of the frame.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from libs.schemas.metrics import GpuInfo, GpuProcess, GpuStats

log = logging.getLogger("fleetwatch.collector.gpu")


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


class Gpus:
    def __init__(self, module: str = "pynvml", enabled: bool = True) -> None:
        self.nvml: Any = None
        self.handles: list[Any] = []
        self.driver = ""
        self.errors = 0
        if not enabled:
            log.info("GPU sampling disabled by configuration")
            return
        try:
            nvml = importlib.import_module(module)
        except ImportError as exc:
            log.info("no NVML binding (%s): frames carry no GPUs", exc)
            return
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
            self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            log.info("NVML unavailable (%s): frames carry no GPUs", exc)
            self.handles = []
            return
        self.nvml = nvml
        try:
            self.driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception:
            self.driver = ""
        log.info("NVML ready", extra={"gpus": len(self.handles), "driver": self.driver})

    @property
    def available(self) -> bool:
        return self.nvml is not None and bool(self.handles)

    def _try(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:
            self.errors += 1
            return None

    def sample(self) -> list[GpuStats]:
        if not self.available:
            return []
        return [self._stats(i, h) for i, h in enumerate(self.handles)]

    def _stats(self, i: int, h: Any) -> GpuStats:
        # The lambdas look the NVML functions up inside `_try` too: a binding without one
        # costs only that field.
        nv = self.nvml
        util = self._try(lambda: nv.nvmlDeviceGetUtilizationRates(h))
        mem = self._try(lambda: nv.nvmlDeviceGetMemoryInfo(h))
        temp = self._try(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
        power = self._try(lambda: nv.nvmlDeviceGetPowerUsage(h))  # milliwatts
        limit = self._try(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h))
        procs = self._try(lambda: nv.nvmlDeviceGetComputeRunningProcesses(h)) or []
        return GpuStats(
            index=i,
            uuid=_text(self._try(lambda: nv.nvmlDeviceGetUUID(h)) or ""),
            name=_text(self._try(lambda: nv.nvmlDeviceGetName(h)) or ""),
            util_percent=float(util.gpu) if util is not None else None,
            mem_util_percent=float(util.memory) if util is not None else None,
            mem_used=int(mem.used) if mem is not None else None,
            mem_total=int(mem.total) if mem is not None else None,
            temperature=float(temp) if temp is not None else None,
            power_w=round(power / 1000.0, 2) if power is not None else None,
            power_limit_w=round(limit / 1000.0, 2) if limit is not None else None,
            processes=[GpuProcess(pid=int(p.pid), mem_used=int(p.usedGpuMemory or 0)) for p in procs],
        )

    def info(self) -> list[GpuInfo]:
        if not self.available:
            return []
        return [self._info(i, h) for i, h in enumerate(self.handles)]

    def _info(self, i: int, h: Any) -> GpuInfo:
        nv = self.nvml
        mem = self._try(lambda: nv.nvmlDeviceGetMemoryInfo(h))
        return GpuInfo(
            index=i,
            uuid=_text(self._try(lambda: nv.nvmlDeviceGetUUID(h)) or ""),
            name=_text(self._try(lambda: nv.nvmlDeviceGetName(h)) or ""),
            mem_total=int(mem.total) if mem is not None else 0,
            driver=self.driver,
        )

    @staticmethod
    def process_memory(stats: list[GpuStats]) -> dict[int, int]:
        """pid -> GPU memory over every GPU (for the process snapshot)."""
        out: dict[int, int] = {}
        for g in stats:
            for p in g.processes:
                out[p.pid] = out.get(p.pid, 0) + p.mem_used
        return out

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass
