"""JSON command-line arguments (``--method-params '{...}'``), parsed with one-line errors naming the flag."""

from __future__ import annotations

import json


def json_arg(text: str, flag: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag}: expected a JSON object, got {text!r} ({e.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag}: expected a JSON object, got {text!r}")
    return value


def json_list(text: str, flag: str) -> list:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag}: expected a JSON list, got {text!r} ({e.msg})") from None
    if not isinstance(value, list) or not value:
        raise ValueError(f"{flag}: expected a non-empty JSON list, got {text!r}")
    return value
