"""Import a part's modules by folder, without name clashes.

Every part has its own model.py, train.py, ... and they import each other by bare name
(`from model import GPT`), exactly as when a learner runs `python partN_x/train.py`. To load several
parts in one pytest process we put the part's folder first on sys.path, import, then forget every
module name that folder defines, so the next part gets its own copies.
"""
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def part_dir(part: str) -> Path:
    path = ROOT / part
    if not path.is_dir():
        raise FileNotFoundError(f"no part folder {path}")
    return path


def _forget(names):
    for name in names:
        sys.modules.pop(name, None)


def load_part(part: str, *modules: str):
    """load_part("part2_tiny_llm", "model", "train") -> (model_module, train_module)."""
    path = part_dir(part)
    local_names = [p.stem for p in path.glob("*.py")]
    _forget(local_names)  # a same-named module from another part must not be reused
    sys.path.insert(0, str(path))
    try:
        loaded = tuple(importlib.import_module(m) for m in modules)
    finally:
        sys.path.remove(str(path))
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
