"""The copy-forward contract: each part is the previous part plus exactly what its CHANGES.md lists.

Every part from part1 on (the folders holding a model.py) starts as a copy of the previous one. For each
consecutive pair we collect the top-level functions and classes of every .py file (exercises.py aside:
each chapter has its own) and sort them into:
  changed  a name defined in both parts whose source differs -> must be listed under "## Changed"
  new      a name only the later part defines                -> must be listed under "## New"
  removed  a name only the earlier part defines              -> must be listed under "## Removed"
and an unchanged name must NOT be listed (a stale line would tell learners something false).

"Source" is the exact text of the def or class, decorators to last line, comments included: comments
are teaching content, and a reworded comment shows up in `diff` like any other change. Comments and
code outside any def (banners, imports, constants) are not compared.

Matching: a name is compared with the same name in the same file of the previous part. A name left
over on both sides in exactly one file each moved (model.py -> sampling.py) and is compared across
files. So `main` of train.py, sample.py and bench.py are three separate names, and a function that
moves is still held to the contract. Files listed whole (a chapter's own tool) never take part in a move.

Manifest lines (in partN_x/CHANGES.md, inside those three sections; other text is free prose):
    - model.py: CausalSelfAttention, Block — 3.2 rotates q and k (RoPE)
    - bench.py — this chapter's own benchmark            (a whole file: every finding of the section in it)

To rewrite the three lists from the code, keeping the reasons already written:
    python tests/test_copy_forward.py --write part3_modern      (without --write: print them)
"""
import ast
import difflib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "CHANGES.md"
SKIP_FILES = {"exercises.py"}
SECTIONS = ("Changed", "New", "Removed")
WHOLE_FILE = "*"
LINE = re.compile(r"^- (?P<file>[\w.-]+\.py)(?::\s*(?P<names>[^—]+?))?\s+(?:—|--)\s+(?P<reason>\S.*)$")
DIFF_LINES = 14


def chain(root=ROOT):
    """The copy-forward parts in chapter order (part0_setup has no model, so it starts nothing)."""
    parts = [p for p in root.glob("part[0-9]*_*") if (p / "model.py").is_file()]
    return sorted(parts, key=lambda p: int(re.match(r"part(\d+)", p.name).group(1)))


def definitions(part: Path) -> dict:
    """{(file, name): (first line number, source text)} of every top-level function and class of the part."""
    found = {}
    for path in sorted(part.glob("*.py")):
        if path.name in SKIP_FILES:
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        for node in ast.parse(text, filename=str(path)).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                found[(path.name, node.name)] = (start, "".join(lines[start - 1:node.end_lineno]))
    return found


def match(before: dict, after: dict, own_files=frozenset()) -> dict:
    """{after key: before key} for every name present in both parts (same file first, then moved).
    own_files: a chapter's own tools (whole-file lines of the manifest); nothing moves into or out of them,
    so the `main` of a dropped bench.py is not compared with the `main` of a new bench_rl.py."""
    pairs = {key: key for key in after if key in before}
    taken_before, taken_after = set(pairs.values()), set(pairs)
    for file, name in after:
        if (file, name) in taken_after:
            continue
        old = [k for k in before if k[1] == name and k not in taken_before and k[0] not in own_files]
        new = [k for k in after if k[1] == name and k not in taken_after and k[0] not in own_files]
        if len(old) == 1 and len(new) == 1:  # one copy left on each side: it moved to another file
            pairs[(file, name)] = old[0]
            taken_before.add(old[0])
            taken_after.add((file, name))
    return pairs


def compare(prev: Path, part: Path) -> dict:
    """{"Changed"|"New"|"Removed": {(file, name), ...}, "diffs": {(file, name): diff lines}} for one pair."""
    before, after = definitions(prev), definitions(part)
    own_files = {file for _, file, name in read_manifest(part) if name == WHOLE_FILE}
    pairs = match(before, after, own_files)
    changed = {k for k, old in pairs.items() if before[old][1] != after[k][1]}
    diffs = {k: short_diff(before[pairs[k]], after[k], f"{prev.name}/{pairs[k][0]}", f"{part.name}/{k[0]}")
             for k in changed}
    return {"Changed": changed, "New": set(after) - set(pairs), "Removed": set(before) - set(pairs.values()),
            "diffs": diffs, "same": set(pairs) - changed}


def short_diff(old: tuple, new: tuple, old_file: str, new_file: str) -> list:
    """The first lines of a unified diff of two definitions; line numbers are those of the files."""
    (old_start, old_text), (new_start, new_text) = old, new
    lines = difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), old_file, new_file, lineterm="", n=1)
    lines = [renumber(line, old_start, new_start) for line in lines]
    more = [f"... ({len(lines) - DIFF_LINES} more diff lines)"] if len(lines) > DIFF_LINES else []
    return lines[:DIFF_LINES] + more


def renumber(line: str, old_start: int, new_start: int) -> str:
    """'@@ -5,3 +5,3 @@' counts from the def; shift it to the file's line numbers so an editor can jump there."""
    m = re.match(r"@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@", line)
    if not m:
        return line
    return f"@@ -{int(m[1]) + old_start - 1}{m[2] or ''} +{int(m[3]) + new_start - 1}{m[4] or ''} @@"


# ----------------------------------------------------------------------------------------------------
# The manifest
class ManifestError(ValueError):
    pass


def read_manifest(part: Path) -> dict:
    """{(section, file, name or "*"): reason}; a list line that does not parse is an error, not ignored."""
    path = part / MANIFEST
    if not path.is_file():
        return {}
    entries, section = {}, None
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if raw.startswith("#"):
            title = raw.lstrip("#").strip().split(" ")[0]
            section = title if raw.startswith("## ") and title in SECTIONS else None
            continue
        if section is None or not raw.startswith("- "):
            continue
        m = LINE.match(raw)
        if not m:
            raise ManifestError(f"{part.name}/{MANIFEST}:{n}: cannot read {raw!r}; "
                                "write '- file.py: name, name — reason' or '- file.py — reason'")
        names = [s.strip() for s in m["names"].split(",")] if m["names"] else [WHOLE_FILE]
        for name in names:
            if name != WHOLE_FILE and not name.isidentifier():
                raise ManifestError(f"{part.name}/{MANIFEST}:{n}: {name!r} is not a function or class name")
            entries[(section, m["file"], name)] = m["reason"]
    return entries


def check(prev: Path, part: Path, sections=SECTIONS) -> list:
    """Every mismatch between part's manifest and the code, as lines for a failure message ([] = all good)."""
    found, entries = compare(prev, part), read_manifest(part)
    after_files = {p.name for p in part.glob("*.py")}
    before_files = {p.name for p in prev.glob("*.py")}
    problems = []
    for section in sections:
        findings = found[section]
        listed = {(f, n) for s, f, n in entries if s == section}
        missing = sorted(k for k in findings if k not in listed and (k[0], WHOLE_FILE) not in listed)
        if missing:
            problems.append(f'not listed; add under "## {section}":')
            problems += [f"    - {file}: {name} — TODO why" for file, name in missing]
            for key in missing if section == "Changed" else []:
                problems += ["      " + line for line in found["diffs"][key]]
        wrong = []
        for file, name in sorted(listed):
            exists = file in (before_files if section == "Removed" else after_files)
            if not exists:
                wrong.append(f"    - {file}: {name}  ({file} does not exist in "
                             f"{prev.name if section == 'Removed' else part.name})")
            elif name == WHOLE_FILE:
                if not any(f == file for f, _ in findings):
                    wrong.append(f"    - {file}  (whole file listed, but nothing in it is {section.lower()})")
            elif (file, name) not in findings:
                wrong.append(f"    - {file}: {name}  ({why_not(found, section, file, name)})")
        if wrong:
            problems.append(f'listed under "## {section}" but not true; remove or fix:')
            problems += wrong
    if problems:
        problems.insert(0, f"{part.name}/{MANIFEST} does not match the code (compared with {prev.name}):"
                        if (part / MANIFEST).is_file() else
                        f"{part.name}/{MANIFEST} is missing: every part after the first lists what it changed.")
        problems.append(f"To rewrite the lists: python tests/test_copy_forward.py --write {part.name}")
    return problems


def why_not(found: dict, section: str, file: str, name: str) -> str:
    for other in SECTIONS:
        if (file, name) in found[other]:
            return f"it is {other.lower()}: move the line under ## {other}"
    if (file, name) in found["same"]:
        return "identical to the previous part: remove the line"
    return f"no top-level {name} in {file}"


# ----------------------------------------------------------------------------------------------------
# The tests
PAIRS = list(zip(chain(), chain()[1:]))
PAIR_IDS = [f"{a.name}->{b.name}" for a, b in PAIRS]


def test_the_chain_has_pairs():
    assert len(PAIRS) >= 3, [p.name for p in chain()]


@pytest.mark.parametrize("prev, part", PAIRS, ids=PAIR_IDS)
def test_changed_code_is_declared(prev, part):
    """The contract: identical unless CHANGES.md says why (and nothing unchanged is said to have changed)."""
    problems = check(prev, part, sections=("Changed",))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.mark.parametrize("prev, part", PAIRS, ids=PAIR_IDS)
def test_new_and_removed_names_are_listed(prev, part):
    problems = check(prev, part, sections=("New", "Removed"))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# The checker itself, on two tiny made-up parts: it must catch each kind of mistake.
BASE = '''def top_p_filter(logits, p):
    return logits  # keep the top token

def helper():
    pass

class Model:
    def forward(self, x):
        return x
'''


def make_parts(tmp_path, later_source, changes, later_files=None):
    a, b = tmp_path / "part1_a", tmp_path / "part2_b"
    for part, files in ((a, {"model.py": BASE}), (b, later_files or {"model.py": later_source})):
        part.mkdir()
        for name, text in files.items():
            (part / name).write_text(text)
    (b / MANIFEST).write_text(f"# Part 2\n\n## Changed\n{changes}\n## New\n## Removed\n")
    return a, b


def test_checker_flags_an_undeclared_fix_with_its_diff(tmp_path):
    prev, part = make_parts(tmp_path, BASE.replace("return logits", "return logits.clone()"), "")
    report = "\n".join(check(prev, part))
    assert "- model.py: top_p_filter — TODO why" in report
    assert "+    return logits.clone()  # keep the top token" in report
    assert "Model" not in report and "helper" not in report


def test_checker_counts_a_comment_change(tmp_path):
    prev, part = make_parts(tmp_path, BASE.replace("# keep the top token", "# the top token always stays"), "")
    assert "- model.py: top_p_filter — TODO why" in "\n".join(check(prev, part))


def test_checker_accepts_a_declared_change_and_ignores_blank_lines_between_defs(tmp_path):
    later = BASE.replace("        return x\n", "        return 2 * x\n")
    prev, part = make_parts(tmp_path, later.replace("\n\nclass", "\n\n\nclass"), "- model.py: Model — doubles x\n")
    assert check(prev, part) == []


def test_checker_flags_stale_and_unknown_lines(tmp_path):
    prev, part = make_parts(tmp_path, BASE, "- model.py: helper, nothing — stale\n- other.py — gone\n")
    report = "\n".join(check(prev, part))
    assert "- model.py: helper  (identical to the previous part: remove the line)" in report
    assert "- model.py: nothing  (no top-level nothing in model.py)" in report
    assert "- other.py: *  (other.py does not exist in part2_b)" in report


def test_checker_follows_a_function_that_moved_file(tmp_path):
    moved = BASE.split("def helper")[0]
    rest = "def helper" + BASE.split("def helper")[1]
    prev, part = make_parts(tmp_path, None, "", later_files={"model.py": rest, "sampling.py": moved})
    assert check(prev, part) == []
    prev2, part2 = tmp_path / "x1", tmp_path / "x2"
    prev.rename(prev2), part.rename(part2)
    (part2 / "sampling.py").write_text(moved.replace("logits", "scores"))
    assert "- sampling.py: top_p_filter — TODO why" in "\n".join(check(prev2, part2))


def test_a_new_tool_file_is_not_compared_with_a_dropped_one(tmp_path):
    tool = "def main():\n    print('bench')\n"
    prev, part = make_parts(tmp_path, None, "", later_files={"model.py": BASE, "bench_b.py": tool.replace("ch", "CH")})
    (prev / "bench_a.py").write_text(tool)
    assert "- bench_b.py: main — TODO why" in "\n".join(check(prev, part))  # same name in one file each: "moved"
    (part / MANIFEST).write_text("## New\n- bench_b.py — Part 2's tool\n## Removed\n- bench_a.py — Part 1's tool\n")
    assert check(prev, part) == []


def test_checker_wants_new_and_removed_names_listed(tmp_path):
    prev, part = make_parts(tmp_path, BASE.replace("def helper", "def helper2"), "")
    report = "\n".join(check(prev, part))
    assert 'add under "## New":\n    - model.py: helper2 — TODO why' in report
    assert 'add under "## Removed":\n    - model.py: helper — TODO why' in report


def test_a_list_line_that_does_not_parse_is_an_error(tmp_path):
    prev, part = make_parts(tmp_path, BASE, "- model.py top_p_filter without a reason\n")
    with pytest.raises(ManifestError, match="CHANGES.md:4"):
        check(prev, part)


# ----------------------------------------------------------------------------------------------------
# Rewriting the lists from the code
def render_sections(prev: Path, part: Path) -> str:
    """The three sections as they should read: written lines keep their reason and order, missing names
    come last with a TODO reason, lines that are no longer true are dropped."""
    found, entries = compare(prev, part), read_manifest(part)
    out = []
    for section in SECTIONS:
        out.append(f"## {section}")
        whole = {f: r for (s, f, n), r in entries.items() if s == section and n == WHOLE_FILE}
        written = {(f, n): i for i, (s, f, n) in enumerate(entries) if s == section}
        place = {k: written.get(k, written.get((k[0], WHOLE_FILE), len(written))) for k in found[section]}
        groups = {}  # (file, reason) -> names, in the order of the manifest
        for file, name in sorted(found[section], key=lambda k: (place[k], k)):
            if file in whole:
                groups.setdefault((file, whole[file]), None)
            else:
                reason = entries.get((section, file, name), "TODO why")
                groups.setdefault((file, reason), []).append(name)
        for (file, reason), names in groups.items():
            out.append(f"- {file}: {', '.join(names)} — {reason}" if names else f"- {file} — {reason}")
        out.append("")
    return "\n".join(out)


def rewrite(part: Path, prev: Path):
    path = part / MANIFEST
    text = path.read_text(encoding="utf-8") if path.is_file() else f"# {part.name}: what changed since {prev.name}\n"
    kept, skipping = [], False
    for line in text.splitlines():  # drop the old lists, keep every other section and the prose
        if line.startswith("#"):
            skipping = line.startswith("## ") and line[3:].split(" ")[0] in SECTIONS
        if not skipping:
            kept.append(line)
    path.write_text("\n".join(kept).rstrip("\n") + "\n\n" + render_sections(prev, part), encoding="utf-8")


if __name__ == "__main__":
    args = sys.argv[1:]
    write = "--write" in args
    wanted = [a for a in args if a != "--write"]
    by_name = {p.name: (prev, p) for prev, p in PAIRS}
    for name in wanted or list(by_name):
        if name.rstrip("/") not in by_name:
            raise SystemExit(f"error: {name} is not a part with a previous part; have: {', '.join(by_name)}")
        prev, part = by_name[name.rstrip("/")]
        if write:
            rewrite(part, prev)
            print(f"wrote {part.name}/{MANIFEST}")
        else:
            print(f"# {part.name}/{MANIFEST}\n{render_sections(prev, part)}")
