# The two commands of the README: `make demo` runs the main job on the bundled
# default, `make test` runs the test suite. Both create (or reuse) .venv/ and
# install what they need; a stamp keyed on the dependency files skips the
# install when nothing changed.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.weakspot-installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
OUT     ?= demo-out

.PHONY: demo test test-quick install bench clean

$(STAMP):
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@# opencv-python(-headless) pulled by other packages shadow the contrib build's cv2.quality
	$(BIN)/python -c "import cv2; cv2.quality.QualityBRISQUE_create" 2>/dev/null || $(BIN)/python -m pip install -q --force-reinstall --no-deps "opencv-contrib-python-headless==5.0.0.93"
	rm -f $(VENV)/.weakspot-installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/weakspot demo --out $(OUT)

test: $(STAMP)
	@# the report's browser test needs Debian's chromium (idempotent; skipped with a reason if it cannot install)
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the browser test will be skipped"
	@# the BRISQUE reference test uses OpenCV's LIVE model files from Debian's opencv-data
	@test -f /usr/share/opencv4/quality/brisque_model_live.yml || (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-data >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-data >/dev/null)) || echo "opencv-data not installed: the OpenCV BRISQUE test will be skipped"
	@# lint, format and type checks at zero findings (docs/development.md)
	BIN=$(BIN) bash .ci/lint
	$(BIN)/python -m pytest -q

# the quick loop: every test not marked slow (> ~3 s each), under a minute on 2 quiet cores
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/camera.py
	$(BIN)/python benchmarks/corruptions.py --quick

clean:
	rm -rf $(OUT) .pytest_cache
