"""The pretraining job: paper model sizes, perplexity, packing, corpora, errors, and short real runs."""

import argparse
import json
import math

import pytest
import torch

from adaptbench.tracks.pretrain.job import (MODEL_SIZES, PretrainConfig, evaluate_ppl, get_size, llama_config,
                                            pack_tokens, pretrain, warmup_cosine_factor)
from adaptbench.tracks.pretrain.job import add_arguments
from adaptbench.tasks import corpora

TINY_RUN = {"steps": 20, "batch_size": 8, "seq_len": 64, "lr": 3e-3, "eval_every": 10, "eval_batches": 4,
            "max_docs": 2000}


@pytest.fixture(scope="module")
def adamw_cell(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain_adamw")
    return out, pretrain(model_size="llama_tiny", corpus="syn_text", seed=0, out_dir=out, train_params=TINY_RUN,
                         threads=1)


# ---- model sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size, shape, params", [
    # GaLore App. C.1 Table 5 (hidden, intermediate, heads, layers); counts with the configs' vocab 32000,
    # untied input and output embeddings: 58.07M and 134.11M, the papers' "60M" and "130M"
    ("llama_60m", (512, 1376, 8, 8), 58_073_600),
    ("llama_130m", (768, 2048, 12, 12), 134_105_856),
    ("llama_350m", (1024, 2736, 16, 24), 367_969_280),
    ("llama_1b", (2048, 5461, 32, 24), 1_339_082_752),
])
def test_paper_sizes_have_the_paper_shapes_and_parameter_counts(size, shape, params):
    from transformers import LlamaForCausalLM

    s = get_size(size)
    assert (s.hidden_size, s.intermediate_size, s.num_attention_heads, s.num_hidden_layers) == shape
    with torch.device("meta"):  # no memory, no init
        model = LlamaForCausalLM(llama_config(size, vocab_size=32000))
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.config.rms_norm_eps == 1e-6 and not model.config.tie_word_embeddings


def test_cpu_sizes_are_small_and_unknown_sizes_suggest():
    from transformers import LlamaForCausalLM

    for size in ("llama_tiny", "llama_mini"):
        with torch.device("meta"):
            model = LlamaForCausalLM(llama_config(size, vocab_size=256))
        assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 4e6
    with pytest.raises(KeyError, match="Did you mean: llama_60m"):
        get_size("llama_60")
    assert set(MODEL_SIZES) >= {"llama_60m", "llama_130m", "llama_tiny", "llama_mini"}


# ---- packing and perplexity -----------------------------------------------------------------------

def _random_docs(n=30, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def test_packing_is_lossless_and_deterministic():
    docs, eos, L = _random_docs(), 1, 16
    stream = [t for d in docs for t in d + [eos]]
    x, y = pack_tokens(docs, eos, L)
    assert x.shape == y.shape and x.shape[1] == L and len(x) == math.ceil((len(stream) - 1) / L)
    assert y[y != -100].tolist() == stream[1:]  # every token after the first is a target, once, in order
    assert x.flatten()[: len(stream) - 1].tolist() == stream[:-1]
    assert (y[:-1] != -100).all()  # only the last window is padded
    x2, y2 = pack_tokens(docs, eos, L)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_perplexity_is_exp_of_the_mean_token_nll():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config("llama_tiny", vocab_size=50, seq_len=32, eos_id=1)).eval()
    docs, L = _random_docs(seed=1), 16
    scores = evaluate_ppl(model, *pack_tokens(docs, 1, L), batch_size=3)
    # independently: each window of L+1 stream tokens through the model's own shifted loss
    stream = [t for d in docs for t in d + [1]]
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(stream) - 1, L):
            window = torch.tensor([stream[start:start + L + 1]])
            n = window.shape[1] - 1
            nll += model(input_ids=window, labels=window).loss.item() * n
            count += n
    assert scores["tokens"] == count == len(stream) - 1
    assert scores["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert scores["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_schedule_warms_up_then_decays_by_cosine_to_the_floor():
    f = [warmup_cosine_factor(t, 10, 100, 0.1) for t in range(101)]
    assert f[:10] == pytest.approx([(t + 1) / 10 for t in range(10)])  # linear warmup, peak at t = W - 1
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.55)  # half way down the cosine
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # non-increasing after warmup
    assert f[100] == pytest.approx(0.1) and min(f) >= 0.1 - 1e-12
    assert warmup_cosine_factor(5, 0, 10, 0.0) == pytest.approx(0.5)  # no warmup, decay to zero


# ---- corpora --------------------------------------------------------------------------------------

def test_synthetic_corpus_is_deterministic_and_disjoint():
    train, val = corpora.load_corpus("syn_text", max_docs=3000)
    again = corpora.load_corpus("syn_text", max_docs=3000)
    assert (train, val) == again and len(train) == 3000 and len(val) == 2000
    assert not set(train) & set(val)
    small, val_small = corpora.load_corpus("syn_text", max_docs=500)
    assert small == train[:500] and val_small == val  # max_docs caps training only
    other, _ = corpora.load_corpus("syn_text", max_docs=500, seed=1)
    assert other != small
    assert corpora.get_corpus("syn_text").is_synthetic and corpora.get_corpus("syn_text").main_metric == "ppl"


def test_local_txt_jsonl_json_and_tsv_load(tmp_path):
    (tmp_path / "a.txt").write_text("the first document .\n\nthe second document .\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": f"json document {i} ."}) for i in range(38)))
    train, val = corpora.load_corpus("local_text", tmp_path)
    assert len(train) + len(val) == 40 and len(val) == 2 and not set(train) & set(val)
    assert (train, val) == corpora.load_corpus("local_text", tmp_path)  # held-out split fixed by the data seed

    split = tmp_path / "split"
    split.mkdir()
    (split / "train.json").write_text(json.dumps({"Instances": [{"sentence": "a b c", "label": "x"},
                                                                {"sentence": "d e f", "label": "y"}]}))
    (split / "dev.tsv").write_text("sentence\tlabel\ng h i\t1\n")
    (split / "notes.txt").write_text("ignored when train/dev files exist\n")
    assert corpora.load_corpus("local_text", split) == (["a b c", "d e f"], ["g h i"])


def test_local_text_errors_are_one_line_and_name_the_file(tmp_path):
    def one_line(exc_info, *needles):
        msg = str(exc_info.value.args[0])
        assert "\n" not in msg and all(n in msg for n in needles), msg

    with pytest.raises(ValueError) as e:
        corpora.load_corpus("local_text", None)
    one_line(e, "data_dir")
    with pytest.raises(FileNotFoundError) as e:
        corpora.load_corpus("local_text", tmp_path / "missing")
    one_line(e, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError) as e:
        corpora.load_corpus("local_text", tmp_path)
    one_line(e, "no .txt")
    (tmp_path / "train.jsonl").write_text('{"text": "fine"}\n{"text": broken}\n')
    with pytest.raises(ValueError) as e:
        corpora.load_corpus("local_text", tmp_path)
    one_line(e, "train.jsonl:2", "not valid JSON")
    (tmp_path / "train.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(ValueError) as e:
        corpora.load_corpus("local_text", tmp_path)
    one_line(e, "train.jsonl:1", "'text'")
    with pytest.raises(KeyError, match="Did you mean: syn_text"):
        corpora.get_corpus("syn_txt")


def test_c4_offline_is_a_one_line_error_naming_the_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError) as e:  # tests run with HF_HUB_OFFLINE=1 (conftest)
        pretrain(model_size="llama_tiny", corpus="c4", seed=0, out_dir=tmp_path, train_params={"max_docs": 10})
    msg = e.value.args[0]
    assert "allenai/c4" in msg and "\n" not in msg
    assert not (tmp_path / "result.json").exists()


def test_tokenizers():
    word = corpora.load_tokenizer("word", ["b a a", "c a"])
    assert word.vocab[:3] == ["<unk>", "<eos>", "a"] and word.encode_batch(["a z"]) == [[2, 0]]
    assert corpora.load_tokenizer("byte", []).encode_batch(["hé"]) == [[104, 195, 169]]
    with pytest.raises(FileNotFoundError, match="not found"):
        corpora.load_tokenizer("./no/such/tokenizer", [])


def test_a_local_hf_tokenizer_folder_works(repo):
    folder = repo.parent / "shared" / "models" / "stories260K"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    tok = corpora.load_tokenizer(str(folder), [])
    assert tok.vocab_size == 512 and tok.eos_id == 2 and tok.encode_batch(["the dog"])[0]


# ---- configuration and command line ---------------------------------------------------------------

def test_config_validates_with_one_line_errors():
    assert PretrainConfig.from_dict({"lr": "1e-3"}).lr == 1e-3
    with pytest.raises(ValueError, match="--optimizer"):
        PretrainConfig.from_dict({"optimizer": "lion"})
    with pytest.raises(ValueError, match="train.steps"):
        PretrainConfig.from_dict({"steps": 0})
    with pytest.raises(ValueError, match="min_lr_ratio"):
        PretrainConfig.from_dict({"min_lr_ratio": 2})


def test_cli_parser_takes_every_flag():
    from adaptbench.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["pretrain", "--optimizer", "lion", "--optimizer-params", '{"beta1": 0.95}',
                              "--model-size", "llama_tiny", "--corpus", "local_text", "--seed", "1",
                              "--train-params", '{"steps": 5}', "--data-dir", "d", "--tokenizer", "byte",
                              "--out", "o", "--threads", "1", "--label", "lion_b95"])
    assert (args.optimizer, args.model_size, args.corpus, args.seed, args.threads, args.label) == \
        ("lion", "llama_tiny", "local_text", 1, 1, "lion_b95")
    assert json.loads(args.optimizer_params) == {"beta1": 0.95} and args.tokenizer == "byte"


# ---- real runs ------------------------------------------------------------------------------------

def test_a_short_run_lowers_validation_perplexity_and_writes_result_json(adamw_cell):
    out, result = adamw_cell
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    assert not list(out.glob(".*.tmp"))
    info, t, m = result["run_info"], result["train_info"], result["metrics"]
    assert result["schema_version"] == 2 and result["status"] == "ok" and result["track"] == "pretrain"
    assert (info["method"], info["label"], info["family"], info["model"], info["task"], info["seed"]) == \
        ("adamw", "adamw", "optimizer", "llama_tiny", "syn_text", 0)
    assert info["synthetic"] is True and len(result["config_hash"]) == 16 and info["tokenizer_info"]["kind"] == "word"
    history = t["history"]
    assert [h["step"] for h in history] == [0, 10, 20]
    assert m["ppl"]["value"] < history[0]["ppl"] and m["ppl"]["value"] == history[-1]["ppl"]
    assert m["ppl"]["best"] == min(h["ppl"] for h in history)
    assert m["ppl"]["value"] == pytest.approx(math.exp(m["loss"]["value"]), rel=1e-4)
    assert result["eval_info"]["main_metric"] == "ppl" and m["ppl"]["higher_is_better"] is False
    assert t["steps"] == 20 and t["tokens_seen"] > 0 and t["tokens_per_second"] > 0
    assert t["params"]["total"] == t["params"]["trainable"] > 0
    # AdamW keeps m and v (fp32) per parameter, plus a scalar step per tensor
    n_tensors = 2 + 4 * 9 + 1  # embed, lm_head; 4 layers × (q, k, v, o, gate, up, down, 2 norms); final norm
    assert t["optimizer_state_bytes"] == 2 * 4 * t["params"]["trainable"] + 4 * n_tensors


def test_collate_tabulates_a_pretraining_result(adamw_cell):
    from adaptbench.collate import collate

    out, result = adamw_cell
    frame = collate([out])
    row = frame[frame["metric"] == "ppl"].iloc[0]
    assert (row["method"], row["model"], row["task"]) == ("adamw", "llama_tiny", "syn_text")
    assert row["value"] == result["metrics"]["ppl"]["value"]


def test_same_seed_same_numbers_and_lion_runs(adamw_cell, tmp_path):
    _, first = adamw_cell
    short = {**TINY_RUN, "steps": 3, "eval_every": 3, "eval_batches": 1}
    a = pretrain(model_size="llama_tiny", corpus="syn_text", seed=0, out_dir=tmp_path / "a", train_params=short)
    b = pretrain(model_size="llama_tiny", corpus="syn_text", seed=0, out_dir=tmp_path / "b", train_params=short)
    assert a["train_info"]["history"] == b["train_info"]["history"]
    assert a["config_hash"] == b["config_hash"] and a["protocol_hash"] == b["protocol_hash"]
    assert a["run_info"]["data"] == first["run_info"]["data"]  # same documents whatever the steps

    lion = pretrain(model_size="llama_tiny", corpus="syn_text", seed=0, out_dir=tmp_path / "lion",
                    train_params=short, optimizer="lion", optimizer_params={"beta1": 0.95})
    info, t = lion["run_info"], lion["train_info"]
    assert info["method"] == "lion" and info["method_params"] == {"beta1": 0.95, "beta2": 0.99}
    assert info["paper"]["arxiv"] == "2302.06675"
    assert t["optimizer_state_bytes"] == 4 * t["params"]["trainable"]  # Lion keeps m only
    assert math.isfinite(lion["metrics"]["ppl"]["value"])
    with pytest.raises(KeyError, match="Unknown method"):
        pretrain(model_size="llama_tiny", corpus="syn_text", seed=0, out_dir=tmp_path / "x", optimizer="lino")
    with pytest.raises(ValueError, match="adamw, which takes none"):
        pretrain(model_size="llama_tiny", corpus="syn_text", seed=0, out_dir=tmp_path / "x",
                 optimizer_params={"beta1": 0.9})
