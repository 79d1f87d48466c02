"""``python -m spark_etl ARGS``: run the job on the Spark that pyspark finds (local by default)."""

from __future__ import annotations

import sys

from spark_etl.main import main

if __name__ == "__main__":
    sys.exit(main())
