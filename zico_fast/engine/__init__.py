"""The run engine under `score`, `search` and `correlate`: one run log, one seed rule, one
reproducibility record, one candidate evaluation and one scoring-backend interface."""
from zico_fast.engine.evaluate import DEFAULT_PROXIES, evaluate, score_candidate
from zico_fast.engine.backends import describe, make_backend
from zico_fast.engine.pool import Backend, InProcessBackend, PoolError, ProcessBackend, Task, WorkerConfig
from zico_fast.engine.ray_backend import RayBackend
from zico_fast.engine.repro import batch_fingerprint, check_device, record, torch_settings
from zico_fast.engine.run_log import RunLog, RunLogError, read_run_log
from zico_fast.engine.seeding import build_seeded, init_seed

__all__ = ["DEFAULT_PROXIES", "evaluate", "score_candidate", "Backend", "InProcessBackend", "PoolError",
           "ProcessBackend", "RayBackend", "Task", "WorkerConfig", "describe", "make_backend", "batch_fingerprint",
           "check_device", "record", "torch_settings", "RunLog", "RunLogError", "read_run_log", "build_seeded",
           "init_seed"]
