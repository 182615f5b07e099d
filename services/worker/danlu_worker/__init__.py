"""danlu's training worker: one process (or one torchrun rank) per job attempt.

Entry points: :func:`danlu_worker.main.main` (the ``danlu-worker`` program) and
:func:`danlu_worker.runner.run_assignment` (training from a ``WorkerAssignment``).
"""

__version__ = "0.1.0"
