"""``danlu-worker`` / ``python -m danlu_worker``: the training program of one job attempt.

1. Read the settings (``DANLU_WORKER_*``, see :mod:`danlu_worker.settings`).
2. GetWorkerAssignment from the training service's WorkerService.
3. Heartbeat in the background (rank 0) and train with :func:`run_assignment`.
4. CompleteWork (rank 0): success, CANCELLED, or the error as a ``google.rpc.Status``.

Exit status: 0 after success or a cancel, 1 after a failure, 2 for unusable settings, 3 when
the attempt was fenced off (another attempt replaced it) or the service stayed unreachable.
SIGTERM (a stopped pod) is reported as ABORTED, which lets the service resume in a new attempt.
"""

from __future__ import annotations

import logging
import signal
import sys

import grpc

from danlu.training.worker.v1alpha1 import worker_service_pb2 as wpb
from danlu_kit.errors import Aborted, DanluError
from danlu_kit.log import configure_logging
from danlu_kit.objectstore import ObjectStore, open_object_store
from danlu_worker.outcome import is_cancelled, status_for_exception
from danlu_worker.reporter import ControlPlaneUnreachable, GrpcReporter, StaleAttemptError
from danlu_worker.runner import run_assignment
from danlu_worker.settings import WorkerSettings

log = logging.getLogger("danlu_worker")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2
EXIT_LOST = 3

_DEFAULT_HEARTBEAT_SECONDS = 10.0


def work(settings: WorkerSettings, *, store: ObjectStore | None = None) -> int:
    """Run one attempt end to end; returns the process exit status."""
    channel = grpc.insecure_channel(settings.control_target)
    identity = wpb.WorkerIdentity(
        training_job=settings.training_job, attempt=settings.attempt, token=settings.token
    )
    dist = settings.distributed
    reporter = GrpcReporter(
        channel, identity, rank=dist.rank, retry_seconds=settings.rpc_retry_seconds
    )
    try:
        try:
            assignment = reporter.get_assignment()
        except (StaleAttemptError, ControlPlaneUnreachable) as exc:
            log.error("no assignment: %s", exc)
            return EXIT_LOST
        if dist.is_main:
            interval = assignment.heartbeat_interval.ToTimedelta().total_seconds()
            reporter.start_heartbeats(interval or _DEFAULT_HEARTBEAT_SECONDS)
        error: BaseException | None = None
        try:
            if store is None:
                store = open_object_store(
                    settings.object_store_url,
                    access_key=settings.s3_access_key,
                    secret_key=settings.s3_secret_key,
                )
            run_assignment(
                assignment,
                store=store,
                reporter=reporter,
                cache_dir=settings.cache_dir,
                attempt=settings.attempt,
                kernels=settings.kernels,
                attention=settings.attention,
                dist=dist,
            )
        except (StaleAttemptError, ControlPlaneUnreachable) as exc:
            log.error("lost the control plane: %s", exc)
            return EXIT_LOST
        except BaseException as exc:  # reported to the service, then the exit status says it
            error = exc
            if not isinstance(exc, DanluError | KeyboardInterrupt):
                log.exception("training failed")
        if reporter.fenced:
            log.error("another attempt replaced this one; exiting without reporting")
            return EXIT_LOST
        status = status_for_exception(error)
        if status is not None:
            log.log(
                logging.INFO if is_cancelled(status) else logging.ERROR,
                "attempt ended: %s",
                status.message,
            )
        if dist.is_main:
            try:
                reporter.complete(status)
            except (StaleAttemptError, ControlPlaneUnreachable) as exc:
                log.error("could not report the outcome: %s", exc)
                return EXIT_LOST
        return EXIT_OK if status is None or is_cancelled(status) else EXIT_FAILED
    finally:
        try:
            reporter.close(timeout=10)
        except Exception:
            log.warning("events could not be flushed", exc_info=True)
        channel.close()


def _terminated(signum: int, frame: object) -> None:
    # A launcher or Kubernetes stops the pod (node drain, pre-emption): report ABORTED, a
    # transient failure the service may retry from the newest checkpoint. A checkpoint being
    # written is abandoned uncommitted (its writer deletes what it uploaded).
    raise Aborted(
        message="the worker was terminated (SIGTERM) before it finished",
        reason="WORKER_TERMINATED",
    )


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    signal.signal(signal.SIGTERM, _terminated)
    try:
        settings = WorkerSettings.from_env()
    except DanluError as exc:
        log.error("%s", exc)
        return EXIT_BAD_SETTINGS
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    return work(settings)


if __name__ == "__main__":
    sys.exit(main())
