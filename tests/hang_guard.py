"""How long a test waits for a subprocess or a log line before calling it hung.

A guard against hangs, not a speed check: CI and developers' machines may be several times
slower than an idle one (two other trainings beside the suite), and a test must not fail for
that. UNIPINREC_TEST_HANG_SECONDS overrides it.
"""

import os

HANG_SECONDS = float(os.environ.get("UNIPINREC_TEST_HANG_SECONDS", "1800"))
