"""Import a part's modules by folder, without name clashes.

Every part has its own model.py, train.py, ... and they import each other by bare name
(`from model import GPT`), exactly as when a learner runs `python partN_x/train.py`. To load several
parts in one pytest process, load_part resolves those bare names to the part's folder while it imports,
names each module "<part>.<name>" in sys.modules, then forgets the bare names, so the next part gets
its own copies.
"""
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def part_dir(part: str) -> Path:
    path = ROOT / part
    if not path.is_dir():
        raise FileNotFoundError(f"no part folder {path}")
    return path


def _forget(names):
    for name in names:
        sys.modules.pop(name, None)


class _PartModuleLoader(importlib.machinery.SourceFileLoader):
    """Runs a part's file as module "<part>.<name>" (e.g. "part4_scaling.bpe"), a name no other part uses.

    Why: pickle (a multiprocessing Pool sending a function to its workers) finds a function again by
    sys.modules[f.__module__]; the bare name "bpe" is forgotten after loading, or belongs to another part."""

    def exec_module(self, module):
        code = self.get_code(self.name)
        part = Path(self.path).parent.name
        sys.modules.setdefault(part, types.ModuleType(part))  # pickle imports "part4_scaling" before ".bpe"
        module.__name__ = f"{part}.{self.name}"
        sys.modules[module.__name__] = module
        exec(code, module.__dict__)


class _PartFinder(importlib.abc.MetaPathFinder):
    """While load_part runs, a bare `import model` means this part's model.py."""

    def __init__(self, path):
        self.path = path

    def find_spec(self, name, path=None, target=None):
        file = self.path / f"{name}.py"
        if "." in name or not file.is_file():
            return None
        return importlib.util.spec_from_file_location(name, file, loader=_PartModuleLoader(name, str(file)))


def load_part(part: str, *modules: str):
    """load_part("part2_tiny_llm", "model", "train") -> (model_module, train_module).
    A part's modules are loaded once per process and shared, as in a real program."""
    path = part_dir(part)
    local_names = [p.stem for p in path.glob("*.py")]
    _forget(local_names)  # a same-named module from another part must not be reused
    for name in local_names:  # this part's own, loaded before, must be: one copy of each per process
        if f"{path.name}.{name}" in sys.modules:
            sys.modules[name] = sys.modules[f"{path.name}.{name}"]
    finder = _PartFinder(path)
    sys.meta_path.insert(0, finder)
    try:
        loaded = tuple(importlib.import_module(m) for m in modules)
    finally:
        sys.meta_path.remove(finder)
        _forget(local_names)
    return loaded[0] if len(loaded) == 1 else loaded


def run_script(script: str, *args: str, cwd=ROOT, timeout=600):
    """Run `python <script> args...` as a learner would (from the repo root unless cwd says otherwise)."""
    import subprocess

    return subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *expected_words):
    """A bad input must end the program with a short message naming the fix, never a traceback."""
    assert result.returncode != 0, "the script accepted bad input"
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "error" in last.lower(), last
    for word in expected_words:
        assert word in last, f"{word!r} not in {last!r}"


def parts_defining(name: str, modules=None) -> list:
    """[(part, module), ...] for every part whose module defines `name` at top level, in chapter order:
    parts_defining("top_p_filter") -> [("part2_tiny_llm", "model"), ("part3_modern", "model"), ...].

    Tests of carried-forward code parametrize over this, so every copy of a function is tested, and a
    name that moves to another file (model.py -> sampling.py) is still found. The source is read with
    ast, not imported, so listing is cheap. modules: only look in these module names."""
    import re

    found = []
    folders = [p for p in ROOT.glob("part[0-9]*_*") if p.is_dir()]
    parts = sorted(folders, key=lambda p: int(re.match(r"part(\d+)", p.name).group(1)))  # part10 after part9
    for part in parts:
        for path in sorted(part.glob("*.py")):
            if path.stem == "exercises" or (modules and path.stem not in modules):
                continue
            if name in _top_level_names(path, path.stat().st_mtime_ns):
                found.append((part.name, path.stem))
    return found


_NAMES = {}  # (path, mtime) -> names: each file version is parsed once per test session


def _top_level_names(path: Path, mtime_ns: int) -> frozenset:
    """Names of the functions and classes a file defines at top level."""
    import ast

    if (path, mtime_ns) not in _NAMES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        _NAMES[(path, mtime_ns)] = frozenset(n.name for n in tree.body if isinstance(n, defs))
    return _NAMES[(path, mtime_ns)]


def part_params(name: str, modules=None, taking=None) -> list:
    """pytest parameters, one per (part, module) that defines `name`, shown as e.g. part3_modern/model.py.
    taking: only the parts whose `name` takes this argument (a feature a later chapter adds)."""
    import inspect

    import pytest

    found = parts_defining(name, modules)
    if taking:
        found = [(p, m) for p, m in found if taking in inspect.signature(getattr(load_part(p, m), name)).parameters]
    return [pytest.param(p, m, id=f"{p}/{m}.py") for p, m in found]


def one_line_exit(exit_info, capsys) -> str:
    """The line an in-process bad input ended with, from `pytest.raises(SystemExit)`: SystemExit's text, or
    argparse's last stderr line. It must be a single line that says 'error'."""
    code = exit_info.value.code
    line = code if isinstance(code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert "\n" not in line.strip() and "error" in line.lower(), line
    return line


def exits_with_one_line(capsys, call, *words, code=None):
    """call() must end with SystemExit and one line that says 'error' and names the words; returns the line."""
    with pytest.raises(SystemExit) as exit_:
        call()
    status = exit_.value.code
    assert status not in (0, None), "the bad input was accepted"
    assert code is None or status == code
    line = one_line_exit(exit_, capsys)
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    return line
