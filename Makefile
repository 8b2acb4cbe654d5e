# One entry point for people and CI. Every target installs first when .venv is missing.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo experiment test lint clean bench bench-quick

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m streampose models fetch
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m streampose.demo

# Held-out error against distinct training data: nested subsets of the Pose2Sim clips (the man; the
# multi-person clips add the composited woman), every size scored on the Sports2D people. --min-fill
# above any size: a run starts once all its videos are in the buffer.
EXPERIMENT_CLIPS := $(foreach k,single multi,$(foreach i,1 2 3 4,pose2sim-$(k)-cam0$(i)))
experiment: $(STAMP)
	$(PY) -m streampose models fetch --all 2>/dev/null
	clips=$$($(PY) -c 'from streampose.store import cache_dir; print(cache_dir() / "clips")') && \
	$(PY) -m streampose experiment --source $(foreach c,$(EXPERIMENT_CLIPS),$$clips/$(c).mp4) \
		--val $$clips/sports2d.mp4 --sizes 1,2,4,8 --steps 300 --warmup 30 --min-fill 100000 --out runs/experiment

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	@# P3 compares against the ffmpeg command line: install Debian's when missing and we may (root + apt-get).
	@command -v ffmpeg >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; }; }; } || \
		echo "ffmpeg is missing and could not be installed (not root, no apt-get, or apt failed): P3 skips its ratio"
	$(PY) benchmarks/pipeline.py --out bench.json

bench-quick: $(STAMP)
	@# P3 compares against the ffmpeg command line: install Debian's when missing and we may (root + apt-get).
	@command -v ffmpeg >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; }; }; } || \
		echo "ffmpeg is missing and could not be installed (not root, no apt-get, or apt failed): P3 skips its ratio"
	$(PY) benchmarks/pipeline.py --quick --out bench.json

clean:
	rm -rf $(VENV) runs/demo runs/experiment
