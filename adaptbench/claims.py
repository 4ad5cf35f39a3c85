"""The papers' own numbers: claims/<paper>.yaml, schema-validated, flattened for the report."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).parent / "schemas" / "claims.schema.yaml"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "claims"


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where PyYAML has it: the same data, faster


@lru_cache(maxsize=1)
def _validator():
    schema = yaml.load(SCHEMA.read_text(), Loader=LOADER)
    return jsonschema.validators.validator_for(schema)(schema)


def load_claims_file(path: str | Path) -> dict:
    """One claims file, schema-checked; a one-line ValueError naming the file (and line) otherwise. Read once per
    version of the file in a process (every report of ``report-all`` reads every claims file)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such claims file") from None
    return copy.deepcopy(_load_claims_file(path, st.st_mtime_ns, st.st_size))


@lru_cache(maxsize=256)
def _load_claims_file(path: Path, _mtime_ns: int, _size: int) -> dict:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=LOADER)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such claims file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; expected a claims YAML") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{where}: not valid YAML ({problem})") from None
    error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ValueError(f"{path}: {where}: {error.message[:200]}") from None
    return data


def papers(claims_dir: str | Path | None = None) -> list[str]:
    """The papers with a claims file (their file stems)."""
    return sorted(p.stem for p in Path(claims_dir or DEFAULT_DIR).glob("*.yaml"))


def check_papers(names, claims_dir: str | Path | None = None) -> None:
    """The claims files a grid's report names exist and load (a typo or a broken file fails the grid
    at DAG build, in one line, instead of vanishing from its report)."""
    import difflib

    known = papers(claims_dir)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=2)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"report.claims: no claims file for paper '{name}'.{hint} Available: {', '.join(known)}")
        load_claims_file(Path(claims_dir or DEFAULT_DIR) / f"{name}.yaml")


def load_claims(claims_dir: str | Path | None = None) -> list[dict]:
    """Every claim as one flat record with its paper's id, table, aggregation and scale. A claims file
    that cannot be read is named on stderr and skipped: one broken paper's numbers never stop another
    grid's report (a grid's own claims files are checked when its DAG is built)."""
    import sys

    records = []
    for path in sorted(Path(claims_dir or DEFAULT_DIR).glob("*.yaml")):
        try:
            data = load_claims_file(path)
        except ValueError as e:
            print(f"adaptbench: warning: skipped claims file {e}", file=sys.stderr)
            continue
        for c in data["claims"]:
            records.append({**c, "paper": path.stem, "arxiv": data["paper"]["arxiv"], "table": data["table"],
                            "aggregate": data["aggregate"], "scale": data.get("scale", 100)})
    return records
