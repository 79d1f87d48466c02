"""``python -m lake_query``: the lake's tables as DuckDB views, and the example queries."""

import sys

from lake_query import main

sys.exit(main())
