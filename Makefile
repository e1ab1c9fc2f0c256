# Two entry points for a newcomer: `make demo` and `make test`.
# Everything lives in .venv next to the checkout; nothing is installed system-wide
# except Debian's chromium for the browser test (apt-get, only when missing).

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= out/demo
EPOCHS ?= 30

.PHONY: demo test lint venv wheel clean system-node system-chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# One environment for training, export and the runtime (pins in pyproject.toml).
# The TF.js converter goes in with --no-deps: its declared deps (tensorflow, jax, flax,
# decision forests) would replace TensorFlow, numpy and protobuf; lulc.export.tfjs covers
# the two imports it makes unconditionally (README, "TF.js"). npm: the Node parity gate.
TFJS_CONVERTER := tensorflowjs==4.22.0 tensorflow-hub==0.16.1 tf-keras==2.21.0

# Debian packages, installed only when missing: Node.js for the web page's npm packages, and
# Chromium for the browser test (Playwright drives it; its own browser download is unreachable).
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get
system-node:
	@command -v node >/dev/null || { $(APT) update -q && $(APT) install -y -q nodejs; }
	@command -v npm >/dev/null || $(APT) install -y -q npm
system-chromium:
	@test -x /usr/bin/chromium || { $(APT) update -q && $(APT) install -y -q chromium; }

$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,export,dask,dev]'
	$(BIN)/pip install --quiet --no-deps $(TFJS_CONVERTER)
	touch $@

# The page's libraries (served offline by `lulc serve`) and the TF.js Node parity gate.
web/node_modules/.installed: web/package-lock.json | system-node
	npm ci --prefix web --ignore-scripts --no-audit --no-fund
	touch $@

venv: $(VENV)/.installed

demo: venv web/node_modules/.installed
	$(BIN)/lulc sample -o data/sample
	$(BIN)/lulc train --arch unet --image data/sample/image.tif --labels data/sample/labels.tif \
		-o $(DEMO)/bundle --epochs $(EPOCHS) --seed 0 --overwrite
	$(BIN)/lulc export --target onnx $(DEMO)/bundle
	$(BIN)/lulc-infer $(DEMO)/bundle data/sample/image.tif -o $(DEMO)/landcover.tif \
		--quicklook $(DEMO)/landcover.png --overwrite
	$(BIN)/lulc evaluate $(DEMO)/bundle --baseline rf
	@$(BIN)/python -m lulc.training.report $(DEMO)/bundle $(DEMO)/landcover.tif $(DEMO)/landcover.png

# The edge wheel (README, "Install"): the runtime, the training and export code, and the browser
# page with the libraries of web/vendor.txt copied in from web/node_modules (setup.py).
wheel: web/node_modules/.installed | $(BIN)/python
	$(BIN)/python -m pip wheel --no-deps . -w dist

# Lint and types before the tests: ruff over the tree, mypy over the runtime by its import name
# (src/ is mypy's path; see [tool.mypy]).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy -p lulc.runtime

test: venv web/node_modules/.installed system-chromium lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out dist
