import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ADAPTBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_glue() -> Path:
    path = SHARED_DATA / "glue"
    if not path.is_dir():
        pytest.skip(f"real GLUE data not found at {path}")
    return path


def tiny_classifier(num_labels: int = 2, seed: int = 0):
    """A 2-layer random BERT (hidden 32) with the real MiniLM WordPiece tokenizer."""
    from adaptbench.models import load_for_classification

    loaded = load_for_classification("tiny-bert", num_labels, regression=(num_labels == 1), seed=seed)
    return loaded.model, loaded.tokenizer


@pytest.fixture
def tiny():
    return tiny_classifier


@pytest.fixture
def batch():
    from adaptbench.models import load_for_classification

    tok = load_for_classification("tiny-bert", 2).tokenizer
    enc = tok(["the movie was not good .", "the plot was brilliant , but the acting was dull .",
               "nobody could say that the cast was not charming ."], padding=True, return_tensors="pt")
    import torch

    enc["labels"] = torch.tensor([0, 0, 1])
    return dict(enc)
