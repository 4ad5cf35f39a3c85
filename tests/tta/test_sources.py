"""TTA source models: the interface model(x) == classifier(features(x)), training on digits, save/load,
and the text source rebuilt from a fine-tuning job's folder."""

import json
import time

import numpy as np
import pytest
import torch

from adaptbench.tta.sources import DigitCNN, DigitMLP, TextClassifier, load_source, load_text_source, train_source


@pytest.mark.parametrize("make", [lambda: DigitCNN(norm="bn"), lambda: DigitCNN(norm="gn"), lambda: DigitMLP(8)],
                         ids=["cnn_bn", "cnn_gn", "mlp_ln"])
@pytest.mark.parametrize("shape", [(5, 8, 8), (5, 1, 8, 8)], ids=["BHW", "B1HW"])
def test_image_models_split_into_features_and_classifier(make, shape):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.rand(shape)
    feats = model.features(x)
    assert feats.shape[0] == 5 and feats.dim() == 2
    assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.in_features == feats.shape[1]
    torch.testing.assert_close(model(x), model.classifier(feats), rtol=0, atol=0)


def test_cnn_takes_any_image_size_and_mlp_checks_its_size():
    assert DigitCNN(norm="gn")(torch.rand(2, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="built for 8x8"):
        DigitMLP(8)(torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match="'bn' or 'gn'"):
        DigitCNN(norm="ln")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("src")
    t0 = time.process_time()
    record = train_source("cnn_bn", "digits", seed=0, out_dir=out, epochs=5, threads=1)
    return out, record, time.process_time() - t0


def test_train_source_on_digits(trained):
    out, record, seconds = trained
    assert record["clean_acc"] > 0.85, record
    assert seconds < 30  # CPU seconds (wall time depends on the machine's load): about 2 s
    on_disk = json.loads((out / "source.json").read_text())
    assert on_disk["clean_acc"] == record["clean_acc"] and on_disk["rows"] == {"train": 1078, "test": 719}
    assert on_disk["params"] == sum(p.numel() for p in DigitCNN().parameters())


def test_load_source_round_trip(trained):
    from adaptbench.tta.data import load_images
    from adaptbench.tta.sources import accuracy

    out, record, _ = trained
    model = load_source(out)  # the folder or the file
    assert not model.training and isinstance(model, DigitCNN)
    data = load_images("digits")
    assert accuracy(model, data.test_x, data.test_y) == record["clean_acc"]
    x = torch.from_numpy(data.test_x[:16])
    torch.testing.assert_close(load_source(out / "source.pt")(x), model(x), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="run train_source first"):
        load_source(out / "missing.pt")


def test_train_source_is_seeded(tmp_path):
    a = train_source("mlp_ln", "digits", seed=3, out_dir=tmp_path / "a", epochs=1, threads=1)
    b = train_source("mlp_ln", "digits", seed=3, out_dir=tmp_path / "b", epochs=1, threads=1)
    assert a["train"]["loss_last"] == b["train"]["loss_last"]
    with pytest.raises(KeyError, match="cnn_bn, cnn_gn, mlp_ln"):
        train_source("resnet", "digits", seed=0, out_dir=tmp_path / "c")


@pytest.fixture(scope="module")
def tiny_bert():
    from adaptbench.models import load_for_classification

    loaded = load_for_classification("tiny-bert", 2, False, seed=0)
    enc = loaded.tokenizer(["the movie was not good .", "the plot was brilliant , but the acting was dull ."],
                           padding=True, return_tensors="pt")
    return loaded.model.eval(), dict(enc)


def test_text_classifier_matches_the_hf_model(tiny_bert):
    hf, enc = tiny_bert
    model = TextClassifier(hf).eval()
    feats = model.features(enc)
    assert feats.shape == (2, hf.config.hidden_size)
    torch.testing.assert_close(model(enc), model.classifier(feats), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(enc), hf(**enc).logits, rtol=0, atol=0)
    assert model.classifier is hf.classifier  # the HF head itself, not a copy
    assert model(dict(enc, labels=torch.tensor([0, 1]))).shape == (2, 2)  # extra keys ignored


def test_text_classifier_roberta_head():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, num_labels=3)
    hf = RobertaForSequenceClassification(cfg).eval()
    enc = {"input_ids": torch.randint(3, 100, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    model = TextClassifier(hf).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(enc), hf(**enc).logits)
        torch.testing.assert_close(model(enc), model.classifier(model.features(enc)), rtol=0, atol=0)
    with pytest.raises(TypeError, match="BERT-family"):
        TextClassifier(torch.nn.Linear(2, 2))


def test_load_text_source_from_a_finetuning_job(tmp_path, tiny_bert):
    from adaptbench.tracks.finetune.job import train

    train(method="full", model="tiny-bert", task="syn_sentiment", seed=0, out_dir=tmp_path,
          train_params={"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_train_samples": 32, "max_eval_samples": 16},
          progress=False)
    model, tokenizer = load_text_source(tmp_path)
    assert isinstance(model, TextClassifier) and not model.training
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["trainable"]
    torch.testing.assert_close(model.classifier.weight, saved["classifier.weight"], rtol=0, atol=0)
    enc = dict(tokenizer(["the ending was superb ."], return_tensors="pt"))
    assert np.isfinite(model(enc).detach().numpy()).all()
    with pytest.raises(FileNotFoundError, match="train.json"):
        load_text_source(tmp_path / "nowhere")
