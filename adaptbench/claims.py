"""The papers' own numbers: claims/<paper>.yaml, schema-validated, flattened for the report."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).parent / "schemas" / "claims.schema.yaml"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "claims"


def load_claims_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    try:
        jsonschema.validate(data, yaml.safe_load(SCHEMA.read_text()))
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ValueError(f"{path}: {where}: {e.message}") from None
    return data


def load_claims(claims_dir: str | Path | None = None) -> list[dict]:
    """Every claim as one flat record with its paper's id, table, aggregation and scale."""
    records = []
    for path in sorted(Path(claims_dir or DEFAULT_DIR).glob("*.yaml")):
        data = load_claims_file(path)
        for c in data["claims"]:
            records.append({**c, "paper": path.stem, "arxiv": data["paper"]["arxiv"], "table": data["table"],
                            "aggregate": data["aggregate"], "scale": data.get("scale", 100)})
    return records
