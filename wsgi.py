"""The WSGI entry point: ``gunicorn wsgi:app``."""

import gc
import os

# One BLAS thread per API process, set before numpy loads: gunicorn already runs
# a process per core, and OpenBLAS's own threads fight them (and Redis) for the
# CPU; on 2 shared cores the same product over 1,000 arms took anywhere from
# 0.07 to 8 ms with a thread per core (see docs/BENCHMARKS.md).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from app import create_app  # noqa: E402  (after the thread settings)

app = create_app()
# Refresh a model as soon as the worker says it saved one (app/model_push.py).
app.extensions["banditd"].saves.start()
# What start-up made (modules, the app, its config: about 130,000 objects the
# cyclic collector tracks) lives as long as the process. A full collection
# rescanned all of it and paused the request it ran in for 50-140 ms on the
# bench box, once every few hundred /choose over 200 candidates; frozen, it is
# never scanned again, and the collections that remain took at most 0.2 ms
# there (as the worker does: app/cli.py).
gc.freeze()
