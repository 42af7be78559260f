"""The command line, built from config dataclasses: every field becomes a --flag.

    @dataclass
    class TrainConfig:
        lr: float = 3e-3  # peak learning rate      ->   --lr FLOAT   peak learning rate (default: 0.003)

The help line of a flag is the comment after its field (or field(metadata={"help": ...})), and --help shows
the defaults in force, presets included: `train.py --preset gpu --help` prints the gpu preset's values.
This file is the same in every part (tools, not a chapter): `diff` between parts shows it unchanged.
"""
import argparse
import ast
import dataclasses
import inspect
import io
import os
import sys
import tokenize


def field_comments(config_cls):
    """{field name: the comment on its line} read from the class's source, e.g. {"lr": "peak learning rate"}."""
    source = class_source(config_cls)
    first_name, comments = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        line = tok.start[0]
        if tok.type == tokenize.NAME:
            first_name.setdefault(line, tok.string)
        elif tok.type == tokenize.COMMENT:  # subtle: tokenize, not str.split("#"), so "#" inside a string is safe
            comments[line] = tok.string.lstrip("#").strip()
    fields = {f.name for f in dataclasses.fields(config_cls)}
    return {first_name[line]: text for line, text in comments.items() if first_name.get(line) in fields}


def class_source(cls):
    """The class's source text; '' where there is none (an interactive session): flags then have no help."""
    files = [f.__code__.co_filename for f in vars(cls).values() if hasattr(f, "__code__")]
    files = [path for path in files if os.path.isfile(path)]  # subtle: works even after the module is unloaded
    if not files:
        try:
            return inspect.getsource(cls)
        except (OSError, TypeError):
            return ""
    with open(files[0], encoding="utf-8") as f:
        source = f.read()
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    return "\n".join(source.splitlines()[node.lineno - 1:node.end_lineno]) + "\n"


def str_to_bool(text):
    """Strict booleans: "--compile maybe" is an error, not a silent False."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false (or yes/no, 1/0), got {text!r}")


def add_config_args(parser, config_cls, title, suppress_defaults=False):
    group = parser.add_argument_group(title)
    comments = field_comments(config_cls)
    for f in dataclasses.fields(config_cls):
        kind = f.type if isinstance(f.type, type) else type(f.default)
        text = f.metadata.get("help") or comments.get(f.name, "")
        help_line = (text.replace("%", "%%") + " " if text else "") + "(default: %(default)s)"
        parse = str_to_bool if kind is bool else kind
        default = argparse.SUPPRESS if suppress_defaults else f.default  # SUPPRESS: absent unless given
        group.add_argument(f"--{f.name}", type=parse, default=default, metavar=kind.__name__.upper(), help=help_line)


def build_parser(description, config_classes, defaults=None, suppress_defaults=False):
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for title, config_cls in config_classes.items():
        add_config_args(parser, config_cls, title, suppress_defaults)
    if defaults and not suppress_defaults:
        parser.set_defaults(**defaults)
    return parser


def parse_args(argv, description, config_classes, defaults=None, presets=None):
    """config_classes: {group title: dataclass}. Returns (one config per dataclass, the set of flag names given
    on the command line). presets: {name: {field: value}}, chosen by a `preset` field; flags still win."""
    defaults = dict(defaults or {})
    if presets:  # before the real parse, so that --help already shows the chosen preset's values
        defaults.update(chosen_preset(argv, description, config_classes, defaults, presets))
    parser = build_parser(description, config_classes, defaults)
    args = vars(parser.parse_args(argv))
    given = set(vars(build_parser(description, config_classes, suppress_defaults=True).parse_args(argv)))
    try:
        configs = tuple(cls(**{f.name: args[f.name] for f in dataclasses.fields(cls)})
                        for cls in config_classes.values())
    except ValueError as e:  # the dataclasses check their own values (__post_init__)
        parser.error(str(e))
    return configs, given


def interrupted(message):
    """Ctrl-C ends a run with one line saying what was kept, and exit status 130 (what a shell reports for
    Ctrl-C), instead of a KeyboardInterrupt traceback. Use: `raise cli.interrupted("best.pt is kept")`."""
    print(f"\ninterrupted: {message}", file=sys.stderr, flush=True)
    return SystemExit(130)


def chosen_preset(argv, description, config_classes, defaults, presets):
    """The values of the preset that --preset (or the `preset` field's default) names."""
    field = next(f for cls in config_classes.values() for f in dataclasses.fields(cls) if f.name == "preset")
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--preset", default=defaults.get("preset", field.default))
    name = pre.parse_known_args(argv)[0].preset
    if name not in presets:
        build_parser(description, config_classes).error(f"--preset must be one of {', '.join(presets)}, got {name!r}")
    return presets[name]
