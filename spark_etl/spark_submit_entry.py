"""spark-submit entry script: ``spark-submit --py-files spark_etl.zip spark_submit_entry.py ARGS``.

It is uploaded beside the zipped package (EMR, local spark-submit) and only hands over to
:func:`spark_etl.main.main`, so the job behaves the same however it is started.
"""

from __future__ import annotations

import sys

from spark_etl.main import main

if __name__ == "__main__":
    sys.exit(main())
