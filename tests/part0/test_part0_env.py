"""Part 0: the environment check, the chapter diff tool and the pipeline picture."""
import json
import re
import shutil

import pytest
from partloader import ROOT, load_part, run_script

check_env, diff_parts, pipeline = load_part("part0_setup", "check_env", "diff_parts", "pipeline")


# ---------------------------------------------------------------- 0.2 check_env


def test_check_env_quick_reports_device_and_speed(capsys, tmp_path):
    # one run covers the printout and the --json file: each run costs a few seconds
    path = tmp_path / "env.json"
    assert check_env.main(["--quick", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"course will use: (cuda|mps|cpu)", out)
    rates = [float(r) for r in re.findall(r"fp32\s*:\s*([\d.]+) GFLOP/s", out)]
    assert rates and rates[0] > 0
    assert "Self CPU" in out  # the profiler table was printed

    report = json.loads(path.read_text())
    assert report["device"] in {"cuda", "mps", "cpu"}
    assert report["gflops"]["fp32"] > 0
    assert set(report["autocast"]) == {"bf16", "fp16"}


@pytest.mark.parametrize("version, ok", [("2.13.0+cpu", True), ("2.3.0", True), ("2.1.0", False), ("1.13.1", False)])
def test_torch_version_rule(monkeypatch, version, ok):
    monkeypatch.setattr(check_env, "torch_version", lambda: version)
    assert (check_env.find_problem() is None) == ok


def test_old_torch_gives_one_line_fix(monkeypatch, capsys):
    monkeypatch.setattr(check_env, "torch_version", lambda: "2.1.0")
    assert check_env.main(["--quick"]) != 0
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1
    assert "torch 2.1.0" in err_lines[0] and "pip install" in err_lines[0]
    assert captured.out == ""  # it stopped before measuring anything


def test_missing_torch_and_missing_module(monkeypatch):
    monkeypatch.setattr(check_env, "torch_version", lambda: None)
    assert "torch is not installed" in check_env.find_problem()
    monkeypatch.setattr(check_env, "torch_version", lambda: "2.13.0")
    real = check_env.installed_version
    monkeypatch.setattr(check_env, "installed_version", lambda name: None if name == "regex" else real(name))
    problem = check_env.find_problem()
    assert problem.startswith("error: regex is not installed") and "\n" not in problem


def test_every_line_of_requirements_txt_is_checked():
    names = [line.split("#")[0].strip() for line in (check_env.REQUIREMENTS_FILE).read_text().splitlines()]
    names = [n for n in names if n]
    checked = check_env.read_requirements()
    assert len(checked) == len(names) and {"torch", "numpy", "hypothesis"} <= {name for name, _ in checked}
    # the list used when part0_setup/ is copied without the repo: the same, minus the lint tool
    fallback = [check_env.parse_requirement(line) for line in check_env.FALLBACK_REQUIREMENTS]
    assert fallback == [req for req in checked if req[0] != "ruff"]


@pytest.mark.parametrize("version, rules, ok", [
    ("1.26.4", [(">=", "1.24"), ("<", "3")], True),
    ("3.0.0", [(">=", "1.24"), ("<", "3")], False),      # the upper bound is exclusive
    ("1.23.9", [(">=", "1.24"), ("<", "3")], False),
    ("2026.11.19", [(">=", "2023.0")], True),
    ("9.2.0", [(">=", "8.0"), ("<", "10")], True),
])
def test_version_ranges(version, rules, ok):
    assert check_env.satisfies(version, rules) == ok


def test_a_version_outside_the_range_names_the_fix(monkeypatch):
    real = check_env.installed_version
    monkeypatch.setattr(check_env, "installed_version", lambda name: "99.0" if name == "numpy" else real(name))
    problem = check_env.find_problem()
    assert problem.startswith("error: numpy 99.0 is outside the tested range") and 'pip install "numpy' in problem


def test_old_python_is_refused():
    assert "Python 3.9" in check_env.find_problem(python=(3, 9))


def test_version_tuple():
    assert check_env.version_tuple("2.13.0+cpu") == (2, 13)
    assert check_env.version_tuple("2.4.0a0+git1234") == (2, 4)


# ---------------------------------------------------------------- 0.2 diff_parts


@pytest.fixture
def fake_repo(tmp_path):
    """Two tiny parts: part2 changes one line of part1's model.py and adds a file."""
    (tmp_path / "part1_alpha").mkdir()
    (tmp_path / "part2_beta").mkdir()
    (tmp_path / "part1_alpha" / "model.py").write_text("x = 1\ny = 2\nz = 3\n")
    (tmp_path / "part2_beta" / "model.py").write_text("x = 1\ny = 20\nz = 3\n")
    (tmp_path / "part2_beta" / "train.py").write_text("print('new')\n")
    for part in ("part1_alpha", "part2_beta"):  # each part's own exercises: never a chapter change
        (tmp_path / part / "exercises.py").write_text(f"# {part}\n")
    return tmp_path


def test_diff_files_shows_removed_and_added_line(fake_repo):
    lines = diff_parts.diff_files(fake_repo / "part1_alpha" / "model.py", fake_repo / "part2_beta" / "model.py")
    assert "-y = 2\n" in lines and "+y = 20\n" in lines
    assert lines[0].startswith("--- part1_alpha/model.py")


def test_diff_cli_with_short_part_names(fake_repo, capsys):
    assert diff_parts.main(["1", "2", "model.py"], root=fake_repo) == 0
    out = capsys.readouterr().out
    assert "+y = 20" in out and "\033[" not in out  # not a terminal: no colour codes


def test_diff_stat(fake_repo, capsys):
    assert diff_parts.main(["part1_alpha", "2", "--stat"], root=fake_repo) == 0
    out = capsys.readouterr().out
    assert re.search(r"model\.py\s+\+1\s+-1", out)
    assert re.search(r"train\.py\s+new in part2_beta", out)
    assert "exercises.py" not in out


def test_diff_html(fake_repo, tmp_path):
    out = tmp_path / "diff.html"
    assert diff_parts.main(["1", "2", "model.py", "--html", str(out)], root=fake_repo) == 0
    assert "<table" in out.read_text()


@pytest.mark.parametrize("argv, expected", [
    (["1", "7", "model.py"], "no part folder '7'"),
    (["1", "2", "missing.py"], "part1_alpha/missing.py does not exist"),
])
def test_diff_errors_are_one_line_exit_2(fake_repo, capsys, argv, expected):
    assert diff_parts.main(argv, root=fake_repo) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- 0.1 pipeline picture


def test_pipeline_writes_png(tmp_path):
    out = pipeline.main(tmp_path / "pipeline.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real picture, not an empty canvas


def test_pipeline_help_writes_no_file(tmp_path):
    """`pipeline.py --help` prints the usage and writes nothing: not a "--help.png", not the default PNG."""
    (tmp_path / "part0_setup").mkdir()
    shutil.copy(ROOT / "part0_setup" / "pipeline.py", tmp_path / "part0_setup")  # the default out is beside it
    result = run_script("part0_setup/pipeline.py", "--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--out" in result.stdout
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "__pycache__" not in p.parts)
    assert files == ["part0_setup", "part0_setup/pipeline.py"]


def test_pipeline_covers_every_stage():
    titles = " ".join(stage[0] for stage in pipeline.STAGES)
    for word in ["Pretraining", "fine-tuning", "Reward", "RLHF", "Reasoning"]:
        assert word in titles
    parts = " ".join(stage[1] for stage in pipeline.STAGES)
    assert all(f"Part {n}" in parts for n in range(1, 10))
