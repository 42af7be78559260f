"""0.2 See what changed between two chapters: each part copies the previous one and adds its idea.

    python part0_setup/diff_parts.py part1_transformer part2_tiny_llm model.py   # unified diff of one file
    python part0_setup/diff_parts.py 1 2 model.py                               # same, short names
    python part0_setup/diff_parts.py 1 2 --stat                                 # +/- lines per common .py file
    python part0_setup/diff_parts.py 1 2 model.py --html out/diff.html          # side-by-side page

Lines starting with "+" are new in the second part, "-" lines were removed from the first.
Without FILE it prints the --stat summary.
"""
import argparse
import difflib
import signal
import sys
from pathlib import Path

# the repo root is the folder above part0_setup/; parts are its part<N>_<name>/ folders
ROOT = Path(__file__).resolve().parent.parent
COLOURS = {"+": "\033[32m", "-": "\033[31m", "@": "\033[36m"}  # green, red, cyan
RESET = "\033[0m"


class PartError(Exception):
    """A problem the learner can fix (wrong part name, missing file); printed as one line."""


def list_parts(root: Path) -> list:
    return sorted(p.name for p in root.glob("part*_*") if p.is_dir())


def resolve_part(name: str, root: Path = ROOT) -> Path:
    """"part2_tiny_llm", "part2" or "2" -> root/part2_tiny_llm."""
    if (root / name).is_dir():
        return root / name
    number = name.removeprefix("part")
    matches = [p for p in root.glob(f"part{number}_*") if p.is_dir()] if number.isdigit() else []
    if len(matches) == 1:
        return matches[0]
    have = ", ".join(list_parts(root)) or "none"
    raise PartError(f"error: no part folder '{name}' in {root} (have: {have})")


def label(path: Path) -> str:
    """part1_transformer/model.py: the part's name tells the learner which side is which."""
    return f"{path.parent.name}/{path.name}"


def read_lines(path: Path) -> list:
    if not path.is_file():
        raise PartError(f"error: {label(path)} does not exist (looked for {path})")
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def diff_files(a_path, b_path, context: int = 3) -> list:
    """Unified diff lines of two files, each labelled with its part.

    subtle: the last line of a file may lack a newline; we add one so diff lines never run together.
    """
    a_path, b_path = Path(a_path), Path(b_path)
    a_lines, b_lines = read_lines(a_path), read_lines(b_path)
    lines = difflib.unified_diff(a_lines, b_lines, label(a_path), label(b_path), n=context)
    return [line if line.endswith("\n") else line + "\n" for line in lines]


def count_changes(diff_lines: list) -> tuple:
    """(added, removed) lines; the '+++'/'---' file headers are not changes."""
    added = sum(1 for line in diff_lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in diff_lines if line.startswith("-") and not line.startswith("---"))
    return added, removed


OWN_FILES = {"exercises.py"}  # every part has its own exercises: not a copy of the previous part's


def stat_lines(a_dir: Path, b_dir: Path) -> list:
    """One summary line per carried-forward .py file: '+N -M' for files in both parts, 'new'/'gone' otherwise."""
    a_files = {p.name for p in a_dir.glob("*.py")} - OWN_FILES
    b_files = {p.name for p in b_dir.glob("*.py")} - OWN_FILES
    rows = []
    for name in sorted(a_files | b_files):
        if name not in a_files:
            rows.append(f"{name:24s} new in {b_dir.name}")
        elif name not in b_files:
            rows.append(f"{name:24s} only in {a_dir.name}")
        else:
            added, removed = count_changes(diff_files(a_dir / name, b_dir / name))
            rows.append(f"{name:24s} +{added:<5d} -{removed}" + ("   (same)" if added == removed == 0 else ""))
    return rows


def colourize(line: str) -> str:
    # only the line's first character decides: '+' added, '-' removed, '@' hunk header
    colour = COLOURS.get(line[:1])
    return f"{colour}{line.rstrip(chr(10))}{RESET}\n" if colour else line


def write_html(a_path: Path, b_path: Path, out: Path) -> None:
    """A side-by-side HTML page (changed regions plus 3 lines of context), opened in any browser."""
    page = difflib.HtmlDiff(wrapcolumn=100).make_file(
        read_lines(a_path), read_lines(b_path), label(a_path), label(b_path), context=True, numlines=3)
    Path(out).parent.mkdir(parents=True, exist_ok=True)  # out/ does not exist on a fresh clone
    Path(out).write_text(page, encoding="utf-8")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("part_a", help="older part: folder name, 'part1' or just '1'")
    parser.add_argument("part_b", help="newer part, same forms")
    parser.add_argument("file", nargs="?", help="file to compare, e.g. model.py (omit for --stat)")
    parser.add_argument("--stat", action="store_true", help="summarize +/- lines for every common .py file")
    parser.add_argument("--html", metavar="OUT", help="also write a side-by-side diff of FILE to this HTML file")
    parser.add_argument("-U", "--context", type=int, default=3, help="unchanged lines shown around each change")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                        help="auto: colour only when printing to a terminal, not into a file or pipe")
    return parser.parse_args(argv)


def run(args, root: Path) -> None:
    a_dir, b_dir = resolve_part(args.part_a, root), resolve_part(args.part_b, root)
    if args.stat or args.file is None:
        print("\n".join(stat_lines(a_dir, b_dir)))
        return
    lines = diff_files(a_dir / args.file, b_dir / args.file, args.context)
    if args.color == "always" or (args.color == "auto" and sys.stdout.isatty()):
        lines = [colourize(line) for line in lines]
    sys.stdout.writelines(lines)
    if not lines:
        print(f"{args.file} is the same in {a_dir.name} and {b_dir.name}")
    if args.html:
        write_html(a_dir / args.file, b_dir / args.file, Path(args.html))
        print(f"wrote {args.html}")


def main(argv=None, root: Path = ROOT) -> int:
    """Exit code 0 on success, 2 with a one-line message for a missing part or file."""
    args = parse_args(argv)
    try:
        run(args, Path(root))
    except PartError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # `... | head` closes the pipe early; die quietly like `diff` does instead of a BrokenPipe traceback
    if hasattr(signal, "SIGPIPE"):  # not on Windows
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
