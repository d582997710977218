"""The WSGI entry point: ``gunicorn wsgi:app``."""

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
