"""`python -m embedding_assets.cli ...`, the same as `emb ...`."""

import sys

from embedding_assets.cli.app import app

sys.exit(app())
