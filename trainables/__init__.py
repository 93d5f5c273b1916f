"""The worker side: one trial = load, train, evaluate, checkpoint.

Compiled artifacts (Inductor's and Triton's caches) go to the cache dir, shared by every trial of a node
and across sweeps: set here, before any module of the package imports torch._dynamo, which fixes
TORCHINDUCTOR_CACHE_DIR to /tmp/torchinductor_<user> the moment it is imported (issue 30, seventeenth
session: a setdefault at compile time, after peft had imported it, never took effect). A value the user
set is kept.
"""

import os

from trainables.builtin_models import cache_dir

if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # read once, at import: set QLORA_SWEEP_CACHE before
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")
