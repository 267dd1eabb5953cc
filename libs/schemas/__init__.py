"""fleetwatch message contracts: Structs, codecs, subjects, stream specs. No I/O."""

from .base import Message, Part
from .codec import Codec, DecodeError, encode
from .events import AlertEvent, AppStatus, AuditRecord, HealthResult, LogBatch, LogLine, ReplicationStatus, UserChange
from .ids import InvalidId, check_host_id, check_name, host_id_from_hostname
from .metrics import PROCESS_HARD_CAP, HostInfo, MetricFrame, ProcessSnapshot

__all__ = [
    "PROCESS_HARD_CAP",
    "AlertEvent",
    "AppStatus",
    "AuditRecord",
    "Codec",
    "DecodeError",
    "HealthResult",
    "HostInfo",
    "InvalidId",
    "LogBatch",
    "LogLine",
    "Message",
    "MetricFrame",
    "Part",
    "ProcessSnapshot",
    "ReplicationStatus",
    "UserChange",
    "check_host_id",
    "check_name",
    "encode",
    "host_id_from_hostname",
]
