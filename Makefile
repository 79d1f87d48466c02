# sparkify-lake: `make demo` runs the pipeline on local Spark; `make test` runs the tests.
# Every target installs what it needs first (a virtualenv in .venv from requirements.txt).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Prefect's local API starts in ~20 s cold: give it room, and send no telemetry.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: demo test test-integration test-all lint setup check-java clean blocks deploy alerts serve server worker query bench \
	bench-large bench-daily bench-kill local-fs-jar emr-spark duckdb-iceberg rehearse-emr fault-test jvm-archive jars s3a-jars bench-s3

demo: check-java jvm-archive ## Generate the sample lake (once) and run the songs_etl flow on local Spark
	$(PY) flows/songs_etl.py

jvm-archive: check-java ## Build (once) the class archive that starts small local runs' JVMs faster
	$(PY) -m spark_etl.jvm_archive

# Extra pytest options for both lanes (.ci/run prints the slowest tests).
PYTEST_ARGS ?=
# Two xdist workers: the Spark tests on one (one JVM), the flow tests on the other
# (tests/conftest.py, SPARK_MODULES). PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
FAST_LANE := not integration and not faults

jars: setup ## Fetch (once) the pinned, checksummed jars (S3A, OpenLineage, Iceberg) into ~/.cache/sparkify-lake/jars
	$(PY) -m spark_etl.jars

s3a-jars: jars

test: check-java jars ## The fast lane (about 4.5 min on 2 cores): Spark on tiny lakes, flows on the ephemeral API, moto in-process
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "$(FAST_LANE)" $(PYTEST_ARGS)

test-integration: check-java emr-spark duckdb-iceberg jars ## The long lane: real servers and processes, EMR rehearsals, the 60 fault runs
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "integration or faults" $(PYTEST_ARGS)

test-all: test test-integration ## Both lanes: every test

lint: setup ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy spark_etl tasks

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "sparkify-lake needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

# The Spark line EMR runs (emr-spark-8.0.0: Spark 4.0 on Python 3.11), beside the project's
# own pyspark: the EMR rehearsal's steps run on it, so an API only newer Spark has fails here.
EMR_VENV ?= .venv-emr
EMR_PYSPARK_VERSION := 4.0.2
# EMR's Python ships boto3, which the job's lease on S3 uses (the project's own pin).
EMR_BOTO3_VERSION := 1.43.117
EMR_PYSPARK := pyspark==$(EMR_PYSPARK_VERSION) py4j==0.10.9.9 boto3==$(EMR_BOTO3_VERSION)
# The stamp names the versions: a new pin reinstalls, any other Makefile edit does not.
EMR_STAMP := $(EMR_VENV)/.installed-pyspark-$(EMR_PYSPARK_VERSION)-boto3-$(EMR_BOTO3_VERSION)
emr-spark: $(EMR_STAMP)

$(EMR_STAMP):
	rm -rf $(EMR_VENV)
	$(PYTHON) -m venv $(EMR_VENV)
	$(EMR_VENV)/bin/python -m pip install --quiet $(EMR_PYSPARK)
	@touch $@

# DuckDB with its iceberg and avro extensions from PyPI's wheels, which exist for DuckDB
# 1.5.5 and not yet for the project's 2.0: reading the Iceberg tables with no network.
DUCKDB_VENV ?= .venv-duckdb
DUCKDB_VERSION := 1.5.5
DUCKDB_STAMP := $(DUCKDB_VENV)/.installed-duckdb-$(DUCKDB_VERSION)
duckdb-iceberg: $(DUCKDB_STAMP) ## A DuckDB that reads Iceberg tables offline (.venv-duckdb), for the tests and by hand

$(DUCKDB_STAMP):
	rm -rf $(DUCKDB_VENV)
	$(PYTHON) -m venv $(DUCKDB_VENV)
	$(DUCKDB_VENV)/bin/python -m pip install --quiet duckdb==$(DUCKDB_VERSION) \
		duckdb-extension-avro==$(DUCKDB_VERSION) duckdb-extension-iceberg==$(DUCKDB_VERSION)
	@touch $@

rehearse-emr: check-java emr-spark jars ## Run the EMR path with no AWS account: moto for AWS, real spark-submit steps
	$(PY) -m rehearsal.emr

fault-test: check-java ## The EMR flow 60 times under seeded AWS faults (~5 min): nothing leaked or duplicated
	$(PY) -m pytest -q -m faults tests/emr/test_fault_injection.py

check-java: setup ## Say what to install when no suitable Java is on PATH
	@$(PY) -m tasks.ops.local_inputs

blocks: setup ## Register the EmrClusterConfig and EmrServerlessConfig block types with the Prefect API in use
	PYTHONPATH=. $(VENV)/bin/prefect block register -m tasks.emr
	PYTHONPATH=. $(VENV)/bin/prefect block register -m tasks.emr_serverless

# The notification block the alerts of songs-etl-daily send through (docs/operations.md).
ALERTS_BLOCK ?= sparkify-alerts

deploy: setup ## Create the process work pool if missing, deploy everything in prefect.yaml, then the alerts
	$(VENV)/bin/prefect work-pool inspect sparkify-process >/dev/null 2>&1 || \
		$(VENV)/bin/prefect work-pool create sparkify-process --type process
	$(VENV)/bin/prefect --no-prompt deploy --all
	$(PY) -m deployments.alerts --block $(ALERTS_BLOCK) --if-block-exists

alerts: setup ## Create or update the alerts of songs-etl-daily (deployments/alerts.yaml) for ALERTS_BLOCK
	$(PY) -m deployments.alerts --block $(ALERTS_BLOCK)

worker: setup ## Start a process worker for the deployments (Ctrl-C twice to stop)
	$(VENV)/bin/prefect worker start --pool sparkify-process

serve: setup ## Serve every flow with its schedule from one process, no worker needed
	$(PY) deployments/serve.py

# The server links its alerts to runs at PREFECT_UI_URL: the address people open the UI at.
server: setup ## A local Prefect server and UI on http://127.0.0.1:4200 (loopback only)
	PREFECT_UI_URL=$${PREFECT_UI_URL:-http://127.0.0.1:4200} \
		$(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200

query: setup ## DuckDB over the local lake: the five tables as views, example queries
	$(PY) -m lake_query --lake data/star-schema

bench: check-java ## Time the job beside the tutorial-style job and DuckDB on lakes S and M
	$(PY) bench/run.py --sizes S M

bench-large: check-java ## The same on lake L (50k songs, 10M events; ~20 min on 2 cores)
	$(PY) bench/run.py --sizes L

bench-daily: check-java jvm-archive ## A full run, then a daily run of a mid-month day, on lakes M and L (~20 min)
	$(PY) bench/daily.py --sizes M L --repeats 2

bench-s3: check-java jars ## On moto's S3 through S3A: each run's requests, and what a reader sees while it publishes (lakes S, M; about 1 h)
	$(PY) -m bench.s3_publication --sizes S
	$(PY) -m bench.s3_publication --sizes M --seed-locally

bench-kill: check-java ## Kill a daily run at 10 moments and re-run it at once: refusals, waits, tables (~10 min)
	$(PY) bench/kill_rerun.py

LOCAL_FS_DIR := spark_etl/localfs
local-fs-jar: setup ## Rebuild the local file system jar from its source (needs javac 17+)
	rm -rf build/localfs && mkdir -p build/localfs
	javac --release 17 -cp "$$(ls $(VENV)/lib/python3*/site-packages/pyspark/jars/hadoop-client-api-*.jar)" \
		-d build/localfs $(LOCAL_FS_DIR)/FastLocalFileSystem.java
	jar --create --date 2020-01-01T00:00:00Z --file $(LOCAL_FS_DIR)/sparkify-local-fs.jar \
		-C build/localfs sparkify

clean: ## Remove the generated sample lake and tables (not the virtualenv)
	rm -rf data/sample-lake data/star-schema
