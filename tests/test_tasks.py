import csv

import pytest

from adaptbench import tasks
from adaptbench.tasks import synthetic_text

GLUE = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
OFFICIAL = {"cola": ["mcc"], "stsb": ["pearson", "spearman"], "mrpc": ["acc", "f1"], "qqp": ["acc", "f1"],
            "mnli": ["acc"], "sst2": ["acc"], "qnli": ["acc"], "rte": ["acc"], "wnli": ["acc"]}


@pytest.mark.parametrize("name", tasks.list_tasks())
def test_task_yaml_is_complete(name):
    spec = tasks.get_task(name)
    assert spec.task == name and spec.version >= 1
    assert spec.main_metric in spec.metrics
    assert spec.kind in ("classification", "regression")
    assert (spec.num_labels == 1) == (spec.kind == "regression")
    assert spec.is_synthetic or (spec.local and spec.hub)
    assert not spec.extra, f"unknown keys {spec.extra}"


def test_the_nine_glue_tasks_carry_their_official_metrics():
    assert set(tasks.list_tasks("glue")) == set(GLUE)
    for name, metrics in OFFICIAL.items():
        assert list(tasks.get_task(name).metrics) == metrics
    assert tasks.get_task("mnli").eval_splits == ("validation", "validation_mm")


def test_unknown_task_suggests():
    with pytest.raises(KeyError, match="Did you mean: sst2"):
        tasks.get_task("sst")


@pytest.mark.parametrize("name", tasks.list_tasks("synthetic"))
def test_synthetic_is_deterministic_balanced_and_disjoint(name):
    spec = tasks.get_task(name)
    a = tasks.load_split(spec, "train")
    b = tasks.load_split(spec, "train")
    assert a.texts == b.texts and a.labels == b.labels and a.sha256 == b.sha256
    dev = tasks.load_split(spec, "validation")
    assert len(a) == spec.synthetic["train"] and len(dev) == spec.synthetic["validation"]
    assert not set(a.texts) & set(dev.texts) or len(set(a.texts) & set(dev.texts)) < 0.05 * len(dev)
    if spec.kind == "classification":
        share = sum(a.labels) / len(a)
        assert 0.35 < share < 0.65, share


def test_sentiment_validation_uses_held_out_adjectives():
    dev = " ".join(r["sentence"] for r in synthetic_text.generate("sentiment", "validation", 300))
    train = " ".join(r["sentence"] for r in synthetic_text.generate("sentiment", "train", 300))
    for word in synthetic_text.POSITIVE[1] + synthetic_text.NEGATIVE[1]:
        assert f" {word} " not in f" {train} "
    assert any(f" {w} " in f" {dev} " for w in synthetic_text.POSITIVE[1])


def test_sentiment_labels_follow_the_composition():
    rows = synthetic_text.generate("sentiment", "train", 400)
    pos, neg = set(synthetic_text.POSITIVE[0]), set(synthetic_text.NEGATIVE[0])
    for r in rows:
        words = r["sentence"].split()
        if words[0] == "although":  # the main clause decides
            last_adj = [w for w in words if w in pos | neg][-1]
            assert r["label"] == (last_adj in pos)
        if " not " not in r["sentence"] and "but" in words:  # after "but" decides
            last_adj = [w for w in words if w in pos | neg][-1]
            assert r["label"] == (last_adj in pos)


def test_roles_swap_keeps_the_words_and_flips_the_label():
    rows = synthetic_text.generate("roles", "train", 400)
    swaps = [r for r in rows if sorted(r["sentence1"].split()) == sorted(r["sentence2"].split())
             and r["sentence1"] != r["sentence2"]]
    assert swaps and all(r["label"] == 0 for r in swaps)


def test_subset_is_deterministic_and_independent_of_training_seed():
    spec = tasks.get_task("syn_sentiment")
    a = tasks.load_split(spec, "train", max_samples=50, seed=0)
    b = tasks.load_split(spec, "train", max_samples=50, seed=0)
    c = tasks.load_split(spec, "train", max_samples=50, seed=1)
    assert a.texts == b.texts and a.texts != c.texts and len(a) == 50
    assert a.sha256 == c.sha256  # hash of the full split as read


def write_tsv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows))


def test_tsv_quotes_do_not_swallow_rows(tmp_path):
    rows = [["sentence", "label"], ['"great movie', "1"], ["bad", "0"], ['ok fine"', "1"]]
    write_tsv(tmp_path / "SST-2" / "train.tsv", rows)
    write_tsv(tmp_path / "SST-2" / "dev.tsv", rows)
    split = tasks.load_split(tasks.get_task("sst2"), "train", str(tmp_path))
    assert split.labels == [1, 0, 1]
    assert split.texts[0] == ('"great movie',)


def test_label_names_map_to_ids(tmp_path):
    rows = [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "not_entailment"], ["1", "c", "d", "entailment"]]
    write_tsv(tmp_path / "RTE" / "train.tsv", rows)
    write_tsv(tmp_path / "RTE" / "dev.tsv", rows)
    assert tasks.load_split(tasks.get_task("rte"), "train", str(tmp_path)).labels == [1, 0]


def test_malformed_tsv_names_file_and_line(tmp_path):
    write_tsv(tmp_path / "RTE" / "train.tsv", [["index", "sentence1", "sentence2", "label"], ["0", "only two"]])
    write_tsv(tmp_path / "RTE" / "dev.tsv", [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entailment"]])
    with pytest.raises(ValueError, match=r"RTE/train.tsv:2: malformed row"):
        tasks.load_split(tasks.get_task("rte"), "train", str(tmp_path))


def test_bad_label_is_named(tmp_path):
    write_tsv(tmp_path / "SST-2" / "train.tsv", [["sentence", "label"], ["fine", "positive"]])
    write_tsv(tmp_path / "SST-2" / "dev.tsv", [["sentence", "label"], ["fine", "1"]])
    with pytest.raises(ValueError, match=r"train.tsv:2: label 'positive'"):
        tasks.load_split(tasks.get_task("sst2"), "train", str(tmp_path))


def test_missing_files_are_reported_unavailable_not_substituted(tmp_path):
    spec = tasks.get_task("mnli")
    reason = tasks.unavailable_reason(spec, str(tmp_path))
    assert reason and "MNLI/train.tsv" in reason
    with pytest.raises(FileNotFoundError, match="data unavailable"):
        tasks.load_split(spec, "train", str(tmp_path))


def test_real_glue_layouts_parse(shared_glue):
    for name, n_dev in {"cola": 1043, "sst2": 872, "mrpc": 408, "stsb": 1500, "rte": 277, "wnli": 71}.items():
        spec = tasks.get_task(name)
        assert tasks.unavailable_reason(spec, str(shared_glue)) is None
        dev = tasks.load_split(spec, "validation", str(shared_glue))
        assert len(dev) == n_dev, name
    assert tasks.unavailable_reason(tasks.get_task("mnli"), str(shared_glue))
    assert tasks.unavailable_reason(tasks.get_task("qnli"), str(shared_glue))  # dev only here: no train
