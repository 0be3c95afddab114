import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# slt.cli.main() (called in-process by test_cli) would otherwise give JAX one CPU device per core for
# every later test; tests that want several devices set them up in a subprocess.
os.environ.setdefault("SLT_CPU_DEVICES", "off")
# no persistent compilation cache in the tests (a test that wants it sets its own directory), so that compile
# times and the programs compiled do not depend on what an earlier run left on disk
os.environ.setdefault("SLT_COMPILATION_CACHE", "off")

import matplotlib

matplotlib.use("Agg")
