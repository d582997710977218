"""The WSGI entry point gunicorn loads: what it sets up in each web process."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import API_KEY, TEST_DATABASE_URL, TEST_REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import gc, os, wsgi; "
    "print(gc.get_freeze_count(), os.environ['OPENBLAS_NUM_THREADS'], flush=True); "
    "os._exit(0)"  # the model-push listener thread holds a Redis connection
)


def test_start_up_objects_are_frozen_out_of_the_cyclic_collector(config_file, migrated_database):
    env = {
        **os.environ,
        "BANDITD_CONFIG": str(config_file),
        "REDIS_URL": TEST_REDIS_URL,
        "DATABASE_URL": TEST_DATABASE_URL,
        "BANDITD_API_KEYS": API_KEY,
    }
    env.pop("OPENBLAS_NUM_THREADS", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    frozen, blas_threads = done.stdout.split()
    # the app, its modules and config: tens of thousands of objects never rescanned
    assert int(frozen) > 20_000
    assert blas_threads == "1"
