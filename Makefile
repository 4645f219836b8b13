# Every target creates .venv when it is missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CASE ?= demo-case

.PHONY: venv demo test bench bench-budget bench-detect bench-spark bench-detection-quality bench-ebs bench-fs bench-container bench-cli lint typecheck clean

$(BIN)/cloudir: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(BIN)/cloudir

venv: $(BIN)/cloudir

demo: venv
	$(BIN)/cloudir demo --case $(CASE) --force

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/ingest_cloudtrail.py $(BENCH_ARGS)

# Where a CloudTrail event's CPU goes in the timeline, stage by stage, beside the budget
# the ingest target leaves; results go to bench/results/ingest_budget-*.
bench-budget: venv
	$(BIN)/python bench/ingest_budget.py $(BENCH_ARGS)

# All shipped Sigma rules over 5M synthetic timeline rows vs one DuckDB scan (3x target);
# the generated case is cached in bench/out-detect/, results go to bench/results/.
bench-detect: venv
	$(BIN)/python bench/detect.py $(BENCH_ARGS)

# The Spark engine at local[1] and local[2] beside DuckDB, in one run: 5M CloudTrail events
# (2,500 files) through `cloudir timeline`, then detect over 5M rows; the rows and findings
# must match DuckDB's. Needs pyspark and Java; results go to bench/results/spark_scale-*.
bench-spark: venv
	$(BIN)/python bench/spark_scale.py $(BENCH_ARGS)

# Recall and false-positive rate per behaviour on the labelled evaluation set
# (tests/data/detection_eval/), the current rules beside the rules as shipped at 641d500;
# results go to bench/results/detection_quality.{json,md}. About a minute.
bench-detection-quality: venv
	$(BIN)/python bench/detection_quality.py $(BENCH_ARGS)

# cloudir's EBS download vs a bare GetSnapshotBlock loop and dsnap against a local moto
# server (issue 20: >= 0.95x the loop, faster than dsnap), at two sizes for memory; results
# go to bench/results/. dsnap pins urllib3<2 but runs with 2: installed without its deps.
bench-ebs: venv
	$(BIN)/python -m pip install --quiet --no-deps dsnap==1.0.1
	$(BIN)/python bench/ebs_download.py --mib 256 --mib 1024 $(BENCH_ARGS)

# cloudir's file system timeline over ext4 images of 10k/25k/50k files beside dissect's
# walkfs (stopped at 120 s) and os.walk; results go to bench/results/.
bench-fs: venv
	$(BIN)/python bench/fs_timeline.py $(BENCH_ARGS)

# cloudir's container capture (hashing on) vs `docker export NAME > FILE` of a container
# holding 20k files / 200 MB, on the engine DOCKER_HOST names (0.8x target); results go to
# bench/results/. Start an engine with scripts/dockerd.sh start, image, env.
bench-container: venv
	$(BIN)/python bench/container_capture.py $(BENCH_ARGS)

# `cloudir --help` and the commands' --help, each in a fresh process, beside `python -c pass`
# (0.2 s target); results go to bench/results/cli_startup.{json,md}.
bench-cli: venv
	$(BIN)/python bench/cli_startup.py $(BENCH_ARGS)

# ruff, then the type checker (CI runs `make lint`, so both gate a change).
lint: venv
	$(BIN)/ruff check cloudir tests bench
	$(BIN)/ruff format --check cloudir tests bench
	$(BIN)/mypy

# mypy over cloudir/ as pyproject.toml's [tool.mypy] says: strict for issue 15's new modules.
typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(CASE) .pytest_cache .mypy_cache
