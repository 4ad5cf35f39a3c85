"""Methods from outside the package: a researcher's own file or folder, or an installed package.

Two routes register a method like a built-in (``@register`` in ``adaptbench.registry``):
  - files: a ``.py`` file or a folder of them, given as ``--methods-path`` (``load_methods_path``) or named
    by a grid's ``methods_path:`` (a path or list, relative to the working folder). Parse time stays
    torch-free: ``scan_method_file`` reads a file's family, flags and defaults from its source (ast), and
    ``add_to_manifest`` adds them to this process's view of methods/manifest.json, so the grid expands and
    hashes the cells as the jobs will; a job imports the files for real (``load_from_env`` reads
    ``$ADAPTBENCH_METHODS_PATH``, which the workflow sets);
  - an installed distribution with an entry point in the ``adaptbench.methods`` group
    (``[project.entry-points."adaptbench.methods"] my_lora = "my_pkg.my_lora"``): ``load_entry_points``
    imports each, and importing runs its ``@register``.

A file is imported under the module name ``adaptbench_user_methods.<file stem>``, so its registry name
is its file stem (as for built-ins) unless it passes ``name=`` to ``register``. A name that a built-in
already has is refused (the built-in would fail to register later). Importing the same file twice in
one process returns the names of the first import; ``forget`` unregisters every outside method, so an
edited file can be loaded again.

``check_method(name)`` runs the family's shared contract (the checks of tests/methods/test_contract.py
and test_optimizer_contract.py, kept here because tests import the package, not the other way round)
on the tiny random BERT in a few seconds, and returns one plain-word line per check.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from adaptbench import manifest, registry

MODULE_PREFIX = "adaptbench_user_methods"
ENTRY_POINT_GROUP = "adaptbench.methods"
_LOADED: dict[Path, list[str]] = {}  # resolved file → the names it registered
_ENTRY_POINT_MODULES: set[str] = set()  # modules imported through entry points (``forget`` drops them)


def load_method_file(path: str | Path) -> list[str]:
    """Import one method file so its ``@register`` runs; returns the registry names it added. One-line
    errors for a missing file, a syntax error, an import error, or a file that registers nothing."""
    path = Path(path).expanduser()
    if not path.is_file():
        hint = " (it is a folder: give it as --methods-path, or name a .py file inside)" if path.is_dir() else ""
        raise FileNotFoundError(f"{path}: no such method file{hint}")
    if path.suffix != ".py":
        raise ValueError(f"{path}: a method file is a Python file (.py), got '{path.suffix or 'no suffix'}'")
    resolved = path.resolve()
    if resolved in _LOADED:
        return list(_LOADED[resolved])
    if _built_in(path.stem):
        raise ValueError(f"{path}: its name '{path.stem}' is already a built-in method "
                         f"({manifest.load()[path.stem]['module']}); rename the file (its stem is the method's name)")
    module_name = f"{MODULE_PREFIX}.{path.stem}"
    if module_name in sys.modules:
        raise ValueError(f"{path}: another method file named '{path.name}' is already loaded "
                         f"({sys.modules[module_name].__file__}); rename one of them")
    before = set(registry._REGISTRY)
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve their module through sys.modules
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        _forget(module_name, before)
        raise ValueError(f"{path}:{e.lineno}: syntax error: {e.msg}; fix the file and run again") from None
    except Exception as e:
        _forget(module_name, before)
        message = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"{path}: importing it failed: {type(e).__name__}: {message}") from e
    added = sorted(set(registry._REGISTRY) - before)
    clash = [n for n in added if _built_in(n)]
    if clash:
        _forget(module_name, before)
        raise ValueError(f"{path}: registers '{clash[0]}', which is already a built-in method "
                         f"({manifest.load()[clash[0]]['module']}); rename the file or pass name= to @register")
    if not added:
        _forget(module_name, before)
        raise _registers_nothing(path)
    _LOADED[resolved] = added
    return list(added)


def _built_in(name: str) -> bool:
    """A method of the package (in methods/manifest.json), not one a user file added to the view."""
    entry = manifest.load().get(name)
    return entry is not None and not entry["module"].startswith(MODULE_PREFIX + ".")


def _registers_nothing(path) -> ValueError:
    return ValueError(f"{path}: registers no method; decorate its class with "
                      "@register(family=..., paper=Paper(...), config=<its Config dataclass>) from adaptbench.registry")


def _forget(module_name: str, before: set) -> None:
    """Undo a failed import: its module and whatever it registered before failing."""
    sys.modules.pop(module_name, None)
    for name in set(registry._REGISTRY) - before:
        del registry._REGISTRY[name]


def method_files(paths, base: str | Path | None = None) -> list[Path]:
    """The method files named by ``paths`` (a file or folder, or a list of them; a folder: its ``*.py`` files
    not starting with ``_``). Relative paths are taken from ``base`` when given, else the working folder."""
    if paths is None:
        return []
    files = []
    for entry in [paths] if isinstance(paths, (str, Path)) else list(paths):
        path = Path(entry).expanduser()
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        if path.is_dir():
            found = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
            if not found:
                raise ValueError(f"methods_path: folder {path} holds no method file (*.py)")
            files += found
        elif path.exists() or path.suffix == ".py":
            files.append(path)
        else:
            raise FileNotFoundError(f"methods_path: {path} is neither a method file nor a folder")
    return files


def load_methods_path(paths, base: str | Path | None = None) -> list[str]:
    """Import every method file of ``paths`` (``method_files``); returns the names registered."""
    return [name for file in method_files(paths, base) for name in load_method_file(file)]


def add_to_manifest(paths, base: str | Path | None = None) -> list[str]:
    """Torch-free: the methods of ``paths``, read by ``scan_method_file``, join this process's view of
    methods/manifest.json (``manifest.load()``), so grid expansion and the jobs' first checks know their
    family and defaults (a cell's hash resolves the defaults as the job will). The job itself imports the
    files (``load_methods_path``, or ``ADAPTBENCH_METHODS_PATH`` through ``load_from_env``)."""
    entries = {}
    for file in method_files(paths, base):
        entries.update(scan_method_file(file))
    built_in = sorted(n for n in entries if _built_in(n))
    if built_in:
        raise ValueError(f"methods_path: '{built_in[0]}' is already a built-in method; rename its file")
    manifest.load().update(entries)  # the cached dict every caller reads; ``forget`` takes them out again
    return sorted(entries)


METHODS_PATH_ENV = "ADAPTBENCH_METHODS_PATH"  # os.pathsep-separated files or folders, set for a grid's jobs


def load_from_env() -> list[str]:
    """A job's user methods: the files of ``$ADAPTBENCH_METHODS_PATH``, in the manifest view and imported."""
    import os

    paths = [p for p in os.environ.get(METHODS_PATH_ENV, "").split(os.pathsep) if p]
    if not paths:
        return []
    add_to_manifest(paths)
    return load_methods_path(paths)


def forget() -> list[str]:
    """Unregister every method loaded from outside the package (files and entry points) and drop their
    modules, so that an edited file loads again in the same process (a notebook, a test). Returns the
    names removed."""
    gone = [n for n, spec in registry._REGISTRY.items()
            if spec.cls.__module__.startswith(MODULE_PREFIX + ".") or spec.cls.__module__ in _ENTRY_POINT_MODULES]
    for name in gone:
        del registry._REGISTRY[name]
    for module in [m for m in sys.modules if m.startswith(MODULE_PREFIX + ".")] + sorted(_ENTRY_POINT_MODULES):
        sys.modules.pop(module, None)
    view = manifest.load()
    scanned = [n for n, e in view.items() if e["module"].startswith(MODULE_PREFIX + ".")]
    for name in scanned:
        del view[name]
    gone += [n for n in scanned if n not in gone]
    _LOADED.clear()
    _ENTRY_POINT_MODULES.clear()
    return gone


def load_entry_points() -> list[str]:
    """Import every installed module in the ``adaptbench.methods`` entry-point group; returns the names
    they registered. A broken plug-in fails in one line naming its entry point and distribution."""
    from importlib.metadata import entry_points

    names = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        before = set(registry._REGISTRY)
        try:
            ep.load()
        except Exception as e:
            dist = getattr(getattr(ep, "dist", None), "name", "?")
            raise ValueError(f"entry point '{ep.name} = {ep.value}' ({ENTRY_POINT_GROUP}, package {dist}) failed "
                             f"to import: {type(e).__name__}: {' '.join(str(e).split())}") from e
        added = sorted(set(registry._REGISTRY) - before)
        _ENTRY_POINT_MODULES.update(registry._REGISTRY[n].cls.__module__ for n in added)
        names += added
    return names


def scan_method_file(path: str | Path) -> dict[str, dict]:
    """A method file's manifest entries, read without importing it (no torch: the Snakefile's parse time):
    ``{name: {family, module, data_driven, mergeable, params: {name: default}}}`` from each class decorated
    with ``@register(family=..., config=<a dataclass in the file>)``. A default is evaluated when it is a
    literal, a module constant, ``field(default=...)``/``field(default_factory=list|dict|tuple)``, arithmetic
    or a ``math`` function of those; anything else is None, and fields a config inherits from outside the
    file are not seen: the job's import is authoritative."""
    import ast
    import math
    import operator

    path = Path(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as e:
        raise ValueError(f"{path}:{e.lineno}: syntax error: {e.msg}; fix the file and run again") from None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv}
    consts: dict = {}

    def dotted(node) -> str:
        return f"{dotted(node.value)}.{node.attr}" if isinstance(node, ast.Attribute) else getattr(node, "id", "")

    def value(node):
        try:
            return None if node is None else ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
        if isinstance(node, ast.Name):
            return consts.get(node.id)
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [value(e) for e in node.elts]
            return None if None in items else (tuple(items) if isinstance(node, ast.Tuple) else items)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            a, b = value(node.left), value(node.right)
            try:
                return None if a is None or b is None else ops[type(node.op)](a, b)
            except (TypeError, ZeroDivisionError, OverflowError):
                return None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = value(node.operand)
            return -v if isinstance(v, (int, float)) else None
        if isinstance(node, ast.Call):
            func, kw = dotted(node.func), {k.arg: k.value for k in node.keywords}
            if func in ("field", "dataclasses.field"):
                if "default" in kw:
                    return value(kw["default"])
                return {"list": [], "dict": {}, "tuple": ()}.get(dotted(kw.get("default_factory")))
            fn = getattr(math, func.removeprefix("math."), None) if func.startswith("math.") else None
            args = [value(a) for a in node.args]
            if callable(fn) and args and all(isinstance(a, (int, float)) for a in args):
                return fn(*args)
        return None

    for node in tree.body:  # module constants, in order (a default may name one)
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            consts[node.targets[0].id] = value(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            consts[node.target.id] = value(node.value)

    def fields(config) -> dict:
        out = {}
        for base in config.bases:  # a base config in the same file first
            if getattr(base, "id", None) in classes:
                out.update(fields(classes[base.id]))
        out.update({n.target.id: value(n.value) for n in config.body
                    if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)})
        return out

    out = {}
    for cls in classes.values():
        for deco in cls.decorator_list:
            if dotted(getattr(deco, "func", None)).rpartition(".")[2] != "register":
                continue
            kw = {k.arg: k.value for k in deco.keywords}
            config = classes.get(getattr(kw.get("config"), "id", None))
            flags = {t.id: value(n.value) for n in cls.body if isinstance(n, ast.Assign)
                     for t in n.targets if isinstance(t, ast.Name)}
            out[value(kw["name"]) if "name" in kw else path.stem] = {
                "family": value(kw.get("family")), "module": f"{MODULE_PREFIX}.{path.stem}",
                "data_driven": flags.get("DATA_DRIVEN") is True, "mergeable": value(kw.get("mergeable")) is True,
                "params": fields(config) if config else {}}
    if not out:
        raise _registers_nothing(path)
    return out


def resolve_method(target: str, name: str | None = None) -> str:
    """``target`` is a method file (loaded) or a registered name (built-in or entry point); returns the
    registry name to use (``name`` picks one when a file registers several)."""
    path = Path(target).expanduser()
    if path.suffix == ".py" or path.exists():
        added = load_method_file(path)
        if name is None and len(added) > 1:
            raise ValueError(f"{path} registers {len(added)} methods ({', '.join(added)}); choose one with --method")
        if name is not None and name not in added:
            raise ValueError(f"{path} registers {', '.join(added)}, not '{name}'")
        return name or added[0]
    load_entry_points()
    registry.get_method(target)  # the registry's "Unknown method ... Did you mean" error
    return target


# ---- the family contract, in plain words --------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:4}  {self.name}" + (f": {self.detail}" if self.detail else "")


def check_method(name: str, seed: int = 0) -> list[Check]:
    """The shared contract of ``name``'s family on tiny models. Each check that raises is a FAIL whose
    detail is the exception's one line; later checks still run."""
    spec = registry.get_method(name)
    checks = {"adapter": _adapter_checks, "optimizer": _optimizer_checks, "tta": _tta_checks}.get(spec.family)
    if checks is None:
        return [Check(f"{spec.family} contract", "SKIP", f"check-method covers adapters, optimizers and TTA "
                      f"methods; a {spec.family} method has no shared contract yet")]
    out = []
    for title, fn in checks(spec, seed):
        try:
            result = fn()
        except Exception as e:  # reported as the check's FAIL line, never hidden
            out.append(Check(title, "FAIL", f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"))
            continue
        status, detail = result if isinstance(result, tuple) else ("PASS", result or "")
        out.append(Check(title, status, detail))
    return out


def _batch():
    import torch

    from adaptbench.models import load_for_classification

    tok = load_for_classification("tiny-bert", 2).tokenizer
    enc = dict(tok(["the movie was not good .", "the plot was brilliant , but the acting was dull .",
                    "nobody could say that the cast was not charming ."], padding=True, return_tensors="pt"))
    enc["labels"] = torch.tensor([0, 0, 1])
    return enc


def _sgd_steps(model, batch, lr: float, steps: int = 3) -> None:
    import torch

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()


def _adapter_checks(spec, seed: int):
    import torch

    from adaptbench import tasks
    from adaptbench.build import build_model, trainable_state
    from adaptbench.models import HEAD_PREFIXES, load_for_classification
    from adaptbench.protocol import matches

    task = tasks.get_task("syn_sentiment")
    batch = _batch()

    def build(s=seed):
        method, model, _ = build_model(spec.name, {}, "tiny-bert", task, s)
        if method.DATA_DRIVEN:  # initialised from batches, as train() does before the optimizer
            method.prepare(model, [batch])
        return method, model

    def intended(method, n):
        return n.startswith(HEAD_PREFIXES) or matches(n, method.TRAINABLE)

    def builds():
        cfg = spec.make_config({})
        return f"{type(cfg).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(cfg).items())})"

    def applies():
        method, model = build()
        n = sum(p.numel() for k, p in model.named_parameters() if p.requires_grad and not k.startswith(HEAD_PREFIXES))
        if not method.TRAINABLE:
            return "FAIL", "the class declares no TRAINABLE patterns (fnmatch patterns of the names it trains)"
        return f"{n} trainable parameters outside the task head"

    def identity():
        method = spec.build()
        if not method.IDENTITY_AT_INIT:
            return "SKIP", "the class declares IDENTITY_AT_INIT = False (its init changes the model by design)"
        base = load_for_classification("tiny-bert", 2, seed=seed).model
        _, adapted = build()
        base.eval(), adapted.eval()
        with torch.no_grad():
            gap = (adapted(**batch).logits - base(**batch).logits).abs().max().item()
        if gap > 1e-5:
            return "FAIL", (f"the adapted model's logits differ from the base model's by {gap:.3g} before any step; "
                            "fix the init, or declare IDENTITY_AT_INIT = False and say why in the docstring")
        return f"max |logits - base logits| = {gap:.1g}"

    def gradients():
        method, model = build()
        wrong = [n for n, p in model.named_parameters() if p.requires_grad != intended(method, n)]
        if wrong:
            return "FAIL", (f"requires_grad disagrees with TRAINABLE {method.TRAINABLE} for {len(wrong)} parameter(s), "
                            f"e.g. {wrong[0]}")
        model(**batch).loss.backward()
        wrong = [n for n, p in model.named_parameters() if (p.grad is not None) != intended(method, n)]
        if wrong:
            return "FAIL", f"{len(wrong)} parameter(s) got a gradient against TRAINABLE, or none where expected, e.g. {wrong[0]}"
        return f"patterns {', '.join(method.TRAINABLE)} (+ the task head)"

    def one_step():
        method, model = build()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        _sgd_steps(model, batch, method.TEST_LR)
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        if not moved:
            return "FAIL", f"3 SGD steps at TEST_LR = {method.TEST_LR} moved no parameter"
        frozen = sorted(n for n in moved if not intended(method, n))
        if frozen:
            return "FAIL", f"a frozen parameter changed: {frozen[0]} ({len(frozen)} in all)"
        adapter = [n for n in moved if not n.startswith(HEAD_PREFIXES)]
        if not adapter:
            return "FAIL", "only the task head moved; the method's own parameters did not"
        return f"{len(adapter)} of the method's tensors moved, nothing frozen"

    def merge():
        if not spec.mergeable:
            return "SKIP", "not declared mergeable"
        method, model = build()
        _sgd_steps(model, batch, method.TEST_LR)
        model.eval()
        with torch.no_grad():
            before = model(**batch).logits
            merged = method.merge(model)
            gap = (merged(**batch).logits - before).abs().max().item()
        plain = all(type(m).__module__.startswith(("torch.", "transformers.")) for m in merged.modules())
        if gap > 1e-5:
            return "FAIL", f"merged logits differ from the adapted model's by {gap:.3g}"
        if not plain:
            return "FAIL", "the merged model still holds the method's own layers (merge should leave plain nn.Linear)"
        return f"max |merged - adapted| = {gap:.1g}, plain layers only"

    def determinism():
        runs = []
        for _ in range(2):
            method, model = build(seed + 3)
            _sgd_steps(model, batch, method.TEST_LR, steps=2)
            runs.append(trainable_state(model))
        differ = [k for k in runs[0] if not torch.equal(runs[0][k], runs[1].get(k, runs[0][k] + 1))]
        if runs[0].keys() != runs[1].keys() or differ:
            return "FAIL", f"two runs with seed {seed + 3} differ in {differ[:1] or 'their tensor names'}"
        return f"{len(runs[0])} trainable tensors bitwise equal"

    return [("builds with its paper defaults", builds), ("applies to the tiny BERT", applies),
            ("starts as the base model", identity), ("only TRAINABLE parameters (and the head) get gradients", gradients),
            ("one step moves them and nothing frozen", one_step), ("merge gives the same outputs", merge),
            ("same seed, same run", determinism)]


def _tta_checks(spec, seed: int):
    """The TTA contract (tests/methods/tta/test_tta_contract.py) on adaptbench/tta/toy.py's BatchNorm + LayerNorm
    model, in the stream runner's order: prepare_source, attach, prepare_fisher, then forward_and_adapt."""
    import copy

    import torch

    from adaptbench.protocol import TTAOptimConfig
    from adaptbench.tta.toy import CLASSES, ToyNet, run, source_batches, stream

    overrides = dict(getattr(spec.cls, "TEST_OVERRIDES", {}))

    def attached():
        method = spec.build(overrides)
        model = ToyNet()
        method.prepare_source(model, source_batches())
        method.attach(model)
        method.prepare_fisher(source_batches())
        return method

    def builds():
        cfg = spec.make_config(overrides)
        return f"{type(cfg).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(cfg).items())})"

    def optimizer():
        method = attached()
        params = list(method.params_to_adapt(method.model))
        if params and method.optimizer is None:
            return "FAIL", (f"params_to_adapt returns {len(params)} tensor(s) but no optimizer was built: let the "
                            "config inherit adaptbench.protocol.TTAOptimConfig")
        if method.optimizer is None:
            return "adapts nothing by backprop (no optimizer)"
        cfg = method.cfg
        if isinstance(cfg, TTAOptimConfig) and method.optimizer.param_groups[0]["lr"] != cfg.lr:
            return "FAIL", f"the optimizer's lr {method.optimizer.param_groups[0]['lr']} is not the config's {cfg.lr}"
        return f"{type(method.optimizer).__name__} over {sum(p.numel() for p in params)} parameter(s)"

    def adapts():
        method = attached()
        xs = stream(0)
        outputs, _ = run(method, xs)
        for x, logits in zip(xs, outputs):
            if tuple(logits.shape) != (len(x), CLASSES) or not torch.isfinite(logits).all():
                return "FAIL", f"forward_and_adapt returned logits of shape {tuple(logits.shape)} (want " \
                               f"{(len(x), CLASSES)}), finite: {bool(torch.isfinite(logits).all())}"
            if logits.requires_grad:
                return "FAIL", "forward_and_adapt returned logits that still require grad: return logits.detach()"
        bad = {k: v for k, v in method.last_stats.items() if not isinstance(v, (int, float))}
        if bad:
            return "FAIL", f"last_stats must hold numbers, got {bad}"
        return f"{len(xs)} batches of {len(xs[0])}: finite ({len(xs[0])}, {CLASSES}) logits, stats {sorted(method.last_stats)}"

    def resets():
        method = attached()
        source = {k: v.detach().clone() for k, v in method.model.state_dict().items()}
        opt_state = copy.deepcopy(method.optimizer.state_dict()) if method.optimizer else None
        xs = stream(0)
        outputs, adapted = run(method, xs)
        method.reset()
        changed = [k for k, v in method.model.state_dict().items() if not torch.equal(v, source[k])]
        if changed:
            return "FAIL", f"reset() left {len(changed)} tensor(s) of the model adapted, e.g. {changed[0]}"
        if method.optimizer is not None and method.optimizer.state_dict() != opt_state:
            return "FAIL", "reset() did not restore the optimizer's state"
        replay, state = run(method, xs)
        gap = max((a - b).abs().max().item() for a, b in zip(outputs, replay))
        drift = max((v.float() - adapted[k].float()).abs().max().item() for k, v in state.items()) if state else 0.0
        if gap > 1e-6 or drift > 1e-6:
            return "FAIL", (f"replaying the stream after reset() differs (logits by {gap:.3g}, weights by {drift:.3g}): "
                            "restore the method's own buffers in reset_state()")
        return "the source model and optimizer come back; a replay reproduces the run"

    return [("builds with its paper defaults", builds), ("the optimizer is the config's", optimizer),
            ("adapts a stream: finite, detached (B, C) logits, numeric stats", adapts),
            ("reset() restores the source; a replay reproduces the run", resets)]


def _optimizer_checks(spec, seed: int):
    import torch

    from adaptbench import tasks
    from adaptbench.build import build_model, build_optimizer, optimizer_method
    from adaptbench.config import TrainConfig
    from adaptbench.protocol import optimizer_state_bytes

    task, batch = tasks.get_task("syn_sentiment"), _batch()

    def build(s=seed):
        cfg = TrainConfig(optimizer=spec.name, optimizer_params=dict(getattr(spec.cls, "TEST_OVERRIDES", {})),
                          lr=1e-3, weight_decay=0.1)
        opt_method = optimizer_method(cfg)
        _, model, _ = build_model("full", {}, "tiny-bert", task, s, opt_method)
        for n, p in model.named_parameters():
            if n.startswith("bert.embeddings."):  # frozen, as a partial adapter leaves them
                p.requires_grad_(False)
        return model, build_optimizer(model, cfg, opt_method)

    def step(model, optimizer):
        model.eval()
        model(**batch).loss.backward()
        had = {n for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return had

    def builds():
        _, optimizer = build()
        return f"{type(optimizer).__name__}"

    def moves():
        model, optimizer = build()
        for _ in range(3):
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            had = step(model, optimizer)
            moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
            if not moved:
                return "FAIL", "a step moved no parameter"
            if moved - had:
                return "FAIL", f"a parameter without a gradient moved: {sorted(moved - had)[0]}"
            if not all(torch.isfinite(p).all() for p in model.parameters()):
                return "FAIL", "a parameter became non-finite"
        return "3 steps, only parameters with a gradient moved, all finite"

    def determinism():
        runs = []
        for _ in range(2):
            model, optimizer = build(seed + 3)
            for _ in range(3):
                step(model, optimizer)
            runs.append({n: p.detach().clone() for n, p in model.named_parameters()})
        differ = [k for k in runs[0] if not torch.equal(runs[0][k], runs[1][k])]
        return ("FAIL", f"two runs differ in {differ[0]}") if differ else "parameters bitwise equal"

    def state():
        model, optimizer = build()
        step(model, optimizer)
        n = optimizer_state_bytes(optimizer)
        return ("FAIL", "no optimizer state after a step") if n <= 0 else f"{n} bytes after one step"

    return [("builds with its paper defaults", builds), ("steps move only what has a gradient", moves),
            ("same seed, same run", determinism), ("optimizer state is counted", state)]
