# One entry point for people and CI. Every target installs first when .venv is missing.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo experiment test lint clean bench bench-quick comotion

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
	$(PY) -m streampose models fetch $(EXPERIMENT_CLIPS) sports2d
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

# CoMotion, the optional multi-person teacher (README, "CoMotion teacher (optional)"); needs internet.
# Apple's code at the commit tested, next to stream-pose's torch (CoMotion's own pins would replace it
# with 2.5.1), with the dependency set it ran with, chumpy, and CoMotion's checkpoints (~1.5 GB).
COMOTION_DIR ?= third_party/ml-comotion
COMOTION_COMMIT := adb7e22f85f58c8f52279ba0e996af83608f904a
COMOTION_DEPS := torch==2.13.0 timm==1.0.13 transformers==4.48.0 pypose==0.9.5 tensordict==0.15.3 einops==0.8.2 \
	scenedetect==0.6.7.1 six==1.17.0 scipy==1.17.1

comotion: $(STAMP)
	test -d $(COMOTION_DIR)/.git || git clone https://github.com/apple/ml-comotion $(COMOTION_DIR)
	git -C $(COMOTION_DIR) checkout --quiet $(COMOTION_COMMIT)
	$(PY) -m pip install --quiet --no-deps -e $(COMOTION_DIR)
	@# PyPI's Linux torchvision wheels are CUDA builds, which do not import next to a CPU-only torch.
	if $(PY) -c 'import sys, torch; sys.exit(not (sys.platform == "linux" and torch.version.cuda is None))'; then \
		$(PY) -m pip install --quiet --no-deps --index-url https://download.pytorch.org/whl/cpu torchvision==0.28.0+cpu; \
	else $(PY) -m pip install --quiet --no-deps torchvision==0.28.0; fi
	$(PY) -m pip install --quiet $(COMOTION_DEPS)
	@# chumpy (it unpickles SMPL_NEUTRAL.pkl): PyPI's 0.70 plus the two fixes of the commit ml-comotion pins
	@# (Python 3.11 has no inspect.getargspec; numpy 1.24 dropped the aliases chumpy imports); setup.py imports pip.
	tmp=$$(mktemp -d) && \
	$(PY) -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation -d $$tmp chumpy==0.70 && \
	tar -xzf $$tmp/chumpy-0.70.tar.gz -C $$tmp && \
	sed -i.orig 's/inspect\.getargspec(/inspect.getfullargspec(/' $$tmp/chumpy-0.70/chumpy/ch.py && \
	sed -i.orig '/^from numpy import bool, int, float, complex, object, unicode, str, nan, inf$$/d' \
		$$tmp/chumpy-0.70/chumpy/__init__.py && \
	$(PY) -m pip install --quiet --no-build-isolation --no-deps $$tmp/chumpy-0.70 && rm -rf $$tmp
	cd $(COMOTION_DIR) && { test -f src/comotion_demo/data/comotion_refine_checkpoint.pt || bash get_pretrained_models.sh; }
	@echo "CoMotion is installed. Last step, yours: register at https://smpl.is.tue.mpg.de, download SMPL 1.1.0 and copy"
	@echo "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl to $(COMOTION_DIR)/src/comotion_demo/data/smpl/SMPL_NEUTRAL.pkl"

clean:
	rm -rf $(VENV) runs/demo runs/experiment
