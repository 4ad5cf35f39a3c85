"""The ``peft`` method (methods/adapters/peft.py): any PEFT tuner by config name, validated against the installed
PEFT; equal to our LoRA at the same init; every tuner of the baseline grid steps, counts and merges like ours."""

import warnings

import pytest
import torch

from adaptbench import manifest, models, tasks
from adaptbench.build import build_model, trainable_state
from adaptbench.protocol import matches
from adaptbench.registry import get_method
from methods.adapters.peft import PEFT_VERSION

SPEC = tasks.get_task("syn_sentiment")

# The tuners of workflows/grids/peft_baselines_minilm_glue.yaml (sized for the 32-wide tiny BERT) and PEFT's
# variants of our LoRA-family methods (workflows/grids/ours_vs_peft_minilm_glue.yaml).
TUNERS = {
    "lora": {},
    "dora": {"args": {"use_dora": True}},
    "pissa": {"args": {"init_lora_weights": "pissa"}},
    "kasa": {"args": {"kasa_config": {"beta": 0.1, "gamma": 0.01}}},
    "vera": {"config": "VeraConfig", "args": {"r": 8}},
    "ia3": {"config": "IA3Config", "args": {"target_modules": ["key", "value", "output.dense"],
                                            "feedforward_modules": ["output.dense"]}},
    "oft": {"config": "OFTConfig", "args": {"r": 0, "oft_block_size": 8}},
    "boft": {"config": "BOFTConfig", "args": {"boft_block_size": 4}},
    "hra": {"config": "HRAConfig", "args": {"r": 8}},
    "prompt": {"config": "PromptTuningConfig", "args": {"num_virtual_tokens": 10}},
    "p_tuning": {"config": "PromptEncoderConfig", "args": {"num_virtual_tokens": 10, "encoder_hidden_size": 32}},
    "prefix": {"config": "PrefixTuningConfig", "args": {"num_virtual_tokens": 10}},
}
PROMPT = {"prompt", "p_tuning", "prefix"}


def peft_method(**params):
    return get_method("peft").build(params)


def build(params, seed=0, method="peft"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BOFT's "CUDA extension not found" and similar notices
        return build_model(method, params, "tiny-bert", SPEC, seed)[:2]


def loss_of(method, model, batch):
    loss = model(**batch).loss
    extra = method.extra_loss(model)
    return loss if extra is None else loss + extra


# ---- configuration: every name validated against the installed PEFT, in one line -------------------------

def test_default_is_peft_lora_with_our_lora_settings():
    cfg = peft_method().peft_cfg
    assert (type(cfg).__name__, cfg.r, cfg.lora_alpha, cfg.lora_dropout) == ("LoraConfig", 8, 8, 0.0)
    assert cfg.task_type is None  # the trainer trains the head, not PEFT's modules_to_save


@pytest.mark.parametrize("params, message", [
    ({"config": "LoRAConfig"}, r"unknown PEFT config class 'LoRAConfig'\. Did you mean: LoraConfig\b.*Available in PEFT"),
    ({"config": "VeraConfg"}, r"Did you mean: VeraConfig"),
    ({"args": {"lora_alfa": 16}}, r"LoraConfig \(PEFT .*\) has no argument 'lora_alfa'\. Did you mean 'lora_alpha'\?"),
    ({"config": "VeraConfig", "args": {"rank": 8}}, r"VeraConfig .* has no argument 'rank'\..* Valid: .*\br\b"),
    ({"args": {"r": "8"}}, r"LoraConfig argument 'r' must be int, got '8' \(str\)"),
    ({"args": {"use_dora": "yes"}}, r"argument 'use_dora' must be bool, got 'yes'"),
    ({"args": {"target_modules": [1, 2]}}, r"argument 'target_modules' must be .*list\[str\]"),
    ({"args": {"task_type": "SEQ_CLS"}}, r"args\.task_type is set by adaptbench"),
    ({"args": {"modules_to_save": ["classifier"]}}, r"modules_to_save names the task head \['classifier'\]"),
    ({"config": "AdaLoraConfig"}, r"AdaLoraConfig is not supported yet: .*update_and_allocate"),
    ({"peft_version": "0.0.1"}, r"the grid pins PEFT 0\.0\.1 but .* is installed; install peft==0\.0\.1"),
    ({"args": {"args": 1}}, r"has no argument 'args'"),
])
def test_bad_configs_fail_in_one_line_naming_the_fix(params, message):
    with pytest.raises(ValueError, match=message) as err:
        peft_method(**params)
    assert "\n" not in str(err.value)


def test_peft_own_checks_surface_as_one_line():
    with pytest.raises(ValueError, match=r"peft: LoraConfig\(\*\*args\) rejected by PEFT .*") as err:
        peft_method(args={"init_lora_weights": "loftq"})  # PEFT: loftq needs a loftq_config
    assert "\n" not in str(err.value)


def test_nested_configs_and_enums_come_as_yaml_gives_them():
    cfg = peft_method(args={"kasa_config": {"beta": 0.2, "gamma": 0.05}}).peft_cfg
    assert (cfg.kasa_config.beta, cfg.kasa_config.gamma) == (0.2, 0.05)
    prompt = peft_method(config="PromptTuningConfig", args={"num_virtual_tokens": 4, "prompt_tuning_init": "RANDOM"})
    assert prompt.peft_cfg.task_type == "SEQ_CLS" and prompt.IDENTITY_AT_INIT is False


def test_grid_params_are_checked_without_torch_and_the_pin_is_recorded():
    manifest.check_params("peft", {"config": "VeraConfig", "args": {"r": 8}, "peft_version": PEFT_VERSION}, "grid")
    with pytest.raises(ValueError, match=r"method 'peft' has no hyperparameter 'r'\."):
        manifest.check_params("peft", {"r": 8}, "grid")  # a tuner's argument belongs under args
    with pytest.raises(ValueError, match=r"args must be a dict"):
        manifest.check_params("peft", {"args": [8]}, "grid")
    assert manifest.resolve_params("peft", {"peft_version": PEFT_VERSION})["peft_version"] == PEFT_VERSION


# ---- PEFT's LoRA is our LoRA ------------------------------------------------------------------------------

def test_equals_our_lora_at_the_same_init(batch):
    """Both built through the registry on one seed; A and B copied from PEFT (B ≠ 0): identical logits, identical
    gradients of every A, B and the head, and identical weights after three SGD steps."""
    _, ours = build({}, method="lora")
    _, theirs = build({})
    mine = dict(ours.named_parameters())
    pairs = {n: n.replace(".default.weight", "") for n, _ in theirs.named_parameters() if ".lora_" in n}
    assert len(pairs) == 2 * 2 * 2 and all(v in mine for v in pairs.values())
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in theirs.named_parameters():
            if ".lora_B." in n:
                p.normal_(std=0.1)  # B = 0 would make the comparison trivial
        for n, p in theirs.named_parameters():
            if p.requires_grad:  # A, B and the head (the head is equal already: same seed)
                mine[pairs.get(n, n)].copy_(p)
    for model in (ours, theirs):
        model.eval()
        model(**batch).loss.backward()
    torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, rtol=0, atol=1e-7)
    for n, p in theirs.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(mine[pairs.get(n, n)].grad, p.grad, rtol=1e-5, atol=1e-8)
    for model in (ours, theirs):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            model(**batch).loss.backward()
            opt.step()
    for n, p in theirs.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(mine[pairs.get(n, n)], p, rtol=1e-5, atol=1e-7)


# ---- data-driven inits: EVA and CorDA by PEFT's own documented flows ----------------------------------------

ALL_LINEARS = ["query", "key", "value", "output.dense", "intermediate.dense"]
DATA_INIT = {  # as workflows/grids/ours_vs_peft_minilm_glue.yaml, sized for the 32-wide tiny BERT
    "eva": {"args": {"r": 4, "lora_alpha": 1, "target_modules": ALL_LINEARS, "init_lora_weights": "eva",
                     "eva_config": {"rho": 2.0, "tau": 0.99, "adjust_scaling_factors": True}}},
    "corda": {"args": {"r": 8, "lora_alpha": 8, "target_modules": ALL_LINEARS, "init_lora_weights": "corda",
                       "corda_config": {"corda_method": "ipm"}}},
}


def init_batches(n=48, seed=0):
    """The init step's batches for syn_sentiment on the tiny BERT (padded, with sequence labels)."""
    from adaptbench.config import TrainConfig
    from adaptbench.data import Encoded, make_collate
    from adaptbench.tracks.finetune.job import init_loader

    tokenizer = models.load_for_classification("tiny-bert", 2).tokenizer
    data = Encoded(tokenizer, tasks.load_split(SPEC, "train", None, n, 0), 32, False)
    return init_loader(data, TrainConfig.from_dict({"batch_size": 8}), make_collate(tokenizer), seed)


def peft_reference(kind, batches):
    """PEFT's documented flow on the plain model of the same seed, written as a PEFT user would."""
    import peft
    from peft.tuners.lora.corda import preprocess_corda
    from peft.tuners.lora.eva import initialize_lora_eva_weights

    _, base = build({}, method="full")
    config = get_method("peft").build(DATA_INIT[kind]).peft_cfg
    if kind == "eva":
        model = peft.get_peft_model(base, config)
        no_labels = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
        initialize_lora_eva_weights(model, no_labels, show_progress_bar=False)
        return model
    singles = []
    for b in batches:
        for i in range(len(b["input_ids"])):
            keep = b["attention_mask"][i].bool()
            singles.append({k: b[k][i][keep][None] for k in ("input_ids", "token_type_ids", "attention_mask")})
    preprocess_corda(base, config, run_model=lambda: [base(**x) for x in singles[:256]])
    return peft.get_peft_model(base, config)


@pytest.mark.parametrize("kind", ["eva", "corda"])
def test_data_driven_init_is_peft_documented_flow(kind):
    """The peft row's EVA / CorDA init equals PEFT's own flow on the same batches: same ranks, A, B and W';
    the adapted model computes the base model's outputs; the head and the factors train, nothing else."""
    batches = list(init_batches())
    method, ours = build(DATA_INIT[kind])
    assert method.DATA_DRIVEN and not get_method("peft").build({}).DATA_DRIVEN
    method.prepare(ours, batches)
    theirs = peft_reference(kind, batches)
    mine, ref = dict(ours.named_parameters()), dict(theirs.base_model.model.named_parameters())
    assert mine.keys() == ref.keys()
    lora = [n for n in mine if ".lora_" in n]
    assert len(lora) == 2 * 6 * 2  # A and B of 6 linears in each of 2 blocks
    ranks = {mine[n].shape[0] for n in lora if ".lora_A." in n}
    if kind == "eva":
        assert ranks != {4}  # ρ = 2: EVA redistributed the rank budget
    for n, p in ref.items():
        torch.testing.assert_close(mine[n], p, rtol=0, atol=0)  # W' (CorDA), A, B, untouched weights, head
    _, base = build({}, method="full")
    input_ = {k: v for k, v in batches[0].items() if k != "labels"}
    for m in (ours, base):
        m.eval()
    torch.testing.assert_close(ours(**input_).logits, base(**input_).logits, rtol=0, atol=1e-5)
    trained = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trained == set(lora) | {n for n in mine if n.startswith("classifier.")}


@pytest.mark.parametrize("kind", ["eva", "corda"])
def test_data_driven_init_cached_and_loaded_on_a_fresh_model_equals_prepare(kind, tmp_path):
    """The workflow's path (init_state saved, loaded into a fresh model of the same seed) gives prepare()'s model."""
    batches = list(init_batches())
    first, model = build(DATA_INIT[kind])
    state = first.init_state(model, batches)
    assert state and all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in state.values())
    torch.save(state, tmp_path / "init.pt")
    second, fresh = build(DATA_INIT[kind])
    second.load_init_state(fresh, torch.load(tmp_path / "init.pt", weights_only=True))
    third, prepared = build(DATA_INIT[kind])
    third.prepare(prepared, batches)
    a, b = dict(fresh.named_parameters()), dict(prepared.named_parameters())
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0)
        assert a[n].requires_grad == b[n].requires_grad


def test_corda_state_for_another_model_fails_in_one_line():
    method, model = build(DATA_INIT["corda"])
    with pytest.raises(ValueError, match=r"peft: CorDA init state has no 'bert\.encoder\.layer\.0\..*S_WC'") as err:
        method.load_init_state(model, {})
    assert "\n" not in str(err.value)


# ---- every tuner of the grids: trains what PEFT trains, counts like ours, merges ---------------------------

@pytest.mark.parametrize("tuner", list(TUNERS))
def test_a_step_trains_exactly_the_tuner_and_the_head(tuner, batch):
    method, model = build(TUNERS[tuner])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if n.startswith(models.HEAD_PREFIXES) or matches(n, method.TRAINABLE)}
    assert trainable - {n for n in before if n.startswith(models.HEAD_PREFIXES)}, "no tuner parameter trains"
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    loss = loss_of(method, model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= trainable
    assert moved - {n for n in moved if n.startswith(models.HEAD_PREFIXES)}, "only the head moved"


@pytest.mark.parametrize("tuner", list(TUNERS))
def test_trainable_count_is_peft_count_minus_the_head(tuner):
    """Our "#params" column (head excluded) == PEFT's get_nb_trainable_parameters() on its own SEQ_CLS model
    (where PEFT trains the head through modules_to_save) minus the head."""
    from peft import get_peft_model

    _, model = build(TUNERS[tuner])
    ours = models.count_parameters(model)
    cfg = peft_method(**TUNERS[tuner]).peft_cfg
    cfg.task_type = "SEQ_CLS"
    plain = models.load_for_classification("tiny-bert", 2, seed=0).model
    head = sum(p.numel() for n, p in plain.named_parameters() if n.startswith(models.HEAD_PREFIXES))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, _ = get_peft_model(plain, cfg).get_nb_trainable_parameters()
    assert ours["trainable_no_head"] == theirs - head > 0
    assert ours["trainable"] == theirs


@pytest.mark.parametrize("tuner", [t for t in TUNERS if t not in PROMPT])
def test_merge_gives_the_trained_outputs_with_plain_layers(tuner, batch):
    method, model = build(TUNERS[tuner])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):
        opt.zero_grad()
        loss_of(method, model, batch).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
        merged = method.merge(model)
        after = merged(**batch).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    assert all(type(m).__module__.startswith(("torch.", "transformers.")) for m in merged.modules())


def test_merge_refuses_a_model_it_did_not_wrap():
    method, _ = build({})
    _, other = build({})
    with pytest.raises(ValueError, match=r"merge\(\) takes the model that this method's apply\(\) returned"):
        method.merge(other)


@pytest.mark.parametrize("tuner", sorted(PROMPT))
def test_prompt_tuners_keep_the_base_names_and_round_trip_unmerged(tuner, batch):
    method, model = build(TUNERS[tuner], seed=1)
    names = {n for n, _ in model.named_parameters()}
    base = {n for n, _ in models.load_for_classification("tiny-bert", 2).model.named_parameters()}
    assert names - base == {n for n in names if n.startswith("prompt_encoder.")}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    loss_of(method, model, batch).backward()
    opt.step()
    state = trainable_state(model)
    fresh_method, fresh = build(TUNERS[tuner], seed=1)
    fresh.load_state_dict(state, strict=False)
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh_method.merge(fresh)(**batch).logits, model(**batch).logits)
    assert fresh_method.merge(fresh) is fresh  # nothing to fold: evaluated unmerged


def test_kasa_adds_peft_regulariser_to_the_task_loss(batch):
    method, model = build(TUNERS["kasa"])
    extra = method.extra_loss(model)
    assert extra.requires_grad and extra.item() > 0
    plain, model = build({})
    assert plain.extra_loss(model) is None


# ---- the jobs: train → checkpoint → rebuild → evaluate, and the cell's hash as the grid computes it ----------

@pytest.mark.parametrize("tuner", ["dora", "prompt", "eva", "corda"])
def test_train_and_evaluate_jobs_agree_with_the_grid(tuner, tmp_path):
    from adaptbench.results import config_hash
    from adaptbench.tracks.finetune.grid import cell_config
    from adaptbench.tracks.finetune.job import evaluate_checkpoint, train

    params = {**(TUNERS | DATA_INIT)[tuner], "peft_version": PEFT_VERSION}
    train_params = {"epochs": 1, "batch_size": 16, "max_train_samples": 32, "max_eval_samples": 32, "lr": 5e-3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = train(method="peft", model="tiny-bert", task="syn_sentiment", seed=0, out_dir=tmp_path,
                       method_params=params, train_params=train_params, progress=False)
        result = evaluate_checkpoint(tmp_path, tmp_path / "result.json")
    grid_side = cell_config(method="peft", method_params=params, model="tiny-bert", task="syn_sentiment", seed=0,
                            train=train_params, data_dir=None)
    assert result["config_hash"] == config_hash(grid_side)  # the folder the grid names is the cell's hash
    assert record["run_info"]["method_params"]["peft_version"] == result["run_info"]["packages"]["peft"]
    last = record["train_info"]["history"][-1]["metrics"]
    assert {n: m["value"] for n, m in result["metrics"].items()} == pytest.approx(last)
