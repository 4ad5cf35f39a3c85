"""Instruction prompts and answer extraction, torch-free.

The prompt is LLM-Adapters' Alpaca-style template (AGI-Edgerunners/LLM-Adapters@816657208a,
finetune.py ``generate_prompt`` and commonsense_evaluate.py / evaluate.py), with and without an input.
The answer extractors are the papers' generative protocols:
  - commonsense (commonsense_evaluate.py ``extract_answer``): the first answer word of the dataset's
    format found in the generated text (``true|false``, ``solution1|solution2``, ``answer1..5``,
    ``option1|option2``);
  - math (evaluate.py ``extract_answer_number``): the last number in the generation, correct when
    within 1e-3 of the label (AQuA, a letter, is not covered here).
"""

from __future__ import annotations

import re

TEMPLATE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
TEMPLATE_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def prompt(instruction: str, input: str = "") -> str:
    """The prompt the model sees; the response follows it directly (LLM-Adapters' generate_prompt)."""
    if input:
        return TEMPLATE_WITH_INPUT.format(instruction=instruction, input=input)
    return TEMPLATE_NO_INPUT.format(instruction=instruction)


# commonsense_evaluate.py: the answer words each dataset's instruction asks for
ANSWER_PATTERNS = {
    "boolq": r"true|false",
    "piqa": r"solution1|solution2",
    "social_i_qa": r"answer1|answer2|answer3|answer4|answer5",
    "ARC-Challenge": r"answer1|answer2|answer3|answer4|answer5",
    "ARC-Easy": r"answer1|answer2|answer3|answer4|answer5",
    "openbookqa": r"answer1|answer2|answer3|answer4|answer5",
    "hellaswag": r"ending1|ending2|ending3|ending4",
    "winogrande": r"option1|option2",
}


def extract_choice(dataset: str, text: str) -> str:
    """The first answer word of ``dataset``'s format in ``text`` ('' when there is none)."""
    if dataset not in ANSWER_PATTERNS:
        raise KeyError(f"no answer format for dataset '{dataset}'; known: {', '.join(ANSWER_PATTERNS)}")
    found = re.findall(ANSWER_PATTERNS[dataset], text.strip().lower())
    return found[0] if found else ""


_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")


def extract_number(text: str) -> float | None:
    """The last number in ``text`` (thousands separators removed), or None."""
    found = _NUMBER.findall(text.replace("$", ""))
    for candidate in reversed(found):
        try:
            return float(candidate.replace(",", "").rstrip("."))
        except ValueError:
            continue
    return None


def number_correct(prediction: float | None, label: float, tolerance: float = 1e-3) -> bool:
    """LLM-Adapters' math protocol: correct when |prediction − label| < 1e-3."""
    return prediction is not None and abs(prediction - label) < tolerance


def gsm8k_label(answer: str) -> float:
    """GSM8K's reference answer: the number after '####'."""
    value = extract_number(answer.split("####")[-1])
    if value is None:
        raise ValueError(f"GSM8K answer without a '#### N' line: {answer[-60:]!r}")
    return value
