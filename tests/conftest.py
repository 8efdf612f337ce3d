"""Suite-wide settings: property tests are reproducible in CI and explore freely elsewhere.

Under `CI` (set by CI runners and by `.ci/run`'s caller) hypothesis runs the "ci" profile:
`derandomize=True` draws the same examples on every run and no example database is read or
written, so the README's test command cannot fail by chance. Locally the default profile keeps
searching with fresh random seeds and remembers failures in `.hypothesis/`.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
