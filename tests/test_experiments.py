"""The experiments/ folders: every command an experiment's README gives (its fenced ``bash`` blocks) names specs that
load, recipes and methods that exist, `egd reproduce` artifacts that exist, stores its own sweeps write and scripts
that exist; every spec and script of a folder is named by its README; the index links every folder, and every
folder is linked; every experiments/ path and relative link in the docs resolves; bench/README.md lists every
timing script."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest

from egalitarian import reproduce
from egalitarian.config import apply_overrides, load_config, recipe_names, resolve
from egalitarian.methods import OPTIMIZERS
from egalitarian.sweep import load_sweep
from egalitarian.tune import load_tune
from egalitarian.tuned import load_handcheck, load_robustness, load_transfer

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
FOLDERS = sorted(p for p in EXPERIMENTS.iterdir() if p.is_dir() and re.fullmatch(r"\d\d-[a-z0-9-]+", p.name))
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
KEYWORDS = {"do", "then", "else"}  # shell keywords that may precede a command


def commands(markdown: str) -> list[list[str]]:
    """Every simple command of the text's ```bash blocks, as argv: line continuations joined, environment
    assignments, a leading keyword and redirections dropped, and ``$VAR`` expanded over the values a ``for VAR in
    ...`` loop or a ``VAR=value`` line of the same block gives it (one argv per combination)."""
    out: list[list[str]] = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M):
        values: dict[str, list[str]] = {}
        for line in block.replace("\\\n", " ").splitlines():
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            tokens, cmd, assigned = iter([*lex, ";"]), [], {}
            for tok in tokens:
                if tok in SEPARATORS:
                    if cmd[:1] == ["for"] and cmd[2:3] == ["in"]:
                        values[cmd[1]] = cmd[3:]
                    elif cmd and cmd[0] != "done":
                        out += expand(cmd, values)
                    elif not cmd:  # a line of assignments only: shell variables for the lines below
                        values.update({k: [v] for k, v in assigned.items()})
                    cmd, assigned = [], {}
                elif tok in (">", ">>", "<"):
                    next(tokens, None)  # the redirection's file is not an argument
                elif not cmd and tok in KEYWORDS:
                    pass
                elif not cmd and (m := re.fullmatch(r"([A-Za-z_]\w*)=(.*)", tok)):
                    assigned[m.group(1)] = m.group(2)
                else:
                    cmd.append(tok)
    return out


def expand(cmd: list[str], values: dict[str, list[str]]) -> list[list[str]]:
    """``cmd`` once per combination of the values of the variables it uses (``$x`` or ``${x}``)."""
    used = [v for v in values if any(re.search(rf"\$({v}\b|{{{v}}})", t) for t in cmd)]
    def fill(token: str, subst: dict[str, str]) -> str:
        return re.sub(r"\$(?:(\w+)|{(\w+)})", lambda m: subst.get(m[1] or m[2], m[0]), token)

    combos = itertools.product(*(values[v] for v in used))
    return [[fill(t, dict(zip(used, combo, strict=True))) for t in cmd] for combo in combos]


def option(cmd: list[str], name: str) -> str | None:
    for i, tok in enumerate(cmd):
        if tok == name and i + 1 < len(cmd):
            return cmd[i + 1]
        if tok.startswith(name + "="):
            return tok.split("=", 1)[1]
    return None


def check_run(cmd: list[str]) -> None:
    """`egd run --config X [--method M] [--set K=V ...]` resolves as the CLI resolves it (values that a shell
    variable fills in are left out)."""
    spec = option(cmd, "--config")
    assert spec is not None, cmd
    assert spec in recipe_names() or (ROOT / spec).is_file(), f"{spec}: neither a recipe nor a file"
    cfg = load_config(spec if spec in recipe_names() else str(ROOT / spec))
    method = option(cmd, "--method")
    if method and "$" not in method:
        cfg["method"] = method
    sets = [cmd[i + 1] for i, t in enumerate(cmd[:-1]) if t == "--set" and "$" not in cmd[i + 1]]
    resolve(apply_overrides(cfg, sets), OPTIMIZERS)


def spec_path(cmd: list[str]) -> Path:
    path = next(t for t in cmd[2:] if not t.startswith("-"))
    assert (ROOT / path).is_file(), f"{' '.join(cmd)}: {path} does not exist"
    return ROOT / path


def check_readme(readme: Path) -> set[Path]:
    """Check every command of one README; returns the files they name."""
    named: set[Path] = set()
    stores: set[Path] = set()
    results: list[str] = []
    for cmd in commands(readme.read_text()):
        if Path(cmd[0]).name == "egd" and len(cmd) > 1:
            sub = cmd[1]
            if sub == "run":
                check_run(cmd)
            elif sub == "sweep":
                path = spec_path(cmd)
                sweep = load_sweep(path)
                assert sweep.runs, path
                named.add(path)
                stores.add(sweep.store)
            elif sub == "tune":
                path = spec_path(cmd)
                assert load_tune(path).contenders, path
                named.add(path)
            elif sub in ("robustness", "transfer", "handcheck"):  # a finished tune's configurations, changed
                path = spec_path(cmd)
                load = {"robustness": load_robustness, "transfer": load_transfer, "handcheck": load_handcheck}[sub]
                assert load(path).methods, path
                named.add(path)
            elif sub == "reproduce":
                name = next(t for t in cmd[2:] if not t.startswith("-"))
                assert name in reproduce.names(), f"egd reproduce {name}: allowed: {reproduce.names()}"
            elif sub == "results":
                results.append(next(t for t in cmd[2:] if not t.startswith("-")))
        elif re.fullmatch(r"(.*/)?python3?", cmd[0]) and len(cmd) > 1 and cmd[1].endswith(".py"):
            assert (ROOT / cmd[1]).is_file(), f"{' '.join(cmd)}: {cmd[1]} does not exist"
            named.add(ROOT / cmd[1])
    for store in results:  # `egd results` reads a store that one of this README's sweeps writes
        assert Path(store) in stores, f"egd results {store}: no sweep of {readme.parent.name} writes it"
    return named


def test_there_are_experiments():
    assert len(FOLDERS) >= 23 and all((f / "README.md").is_file() for f in FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_every_command_of_an_experiment_names_what_exists(folder):
    readme = folder / "README.md"
    text = readme.read_text()
    assert text.startswith(f"# {folder.name[:2]}. ") and "**Question.**" in text and "**Answer.**" in text
    named = check_readme(readme)
    # every spec and script kept in the folder is one its commands use
    own = {p for p in folder.iterdir() if p.suffix in (".toml", ".py")}
    assert sorted(p.name for p in own - named) == []


def test_the_commands_are_parsed_as_a_shell_would():
    block = ("for m in egd sgd; do for s in 0 1; do\n  OMP_NUM_THREADS=1 egd run --config mod-add-p97 --method $m \\\n"
             "    --set train.seed=$s\ndone; done\negd sweep a.toml --workers 2 && egd results x.sqlite  # note\n"
             "python b.py > out.md\nALL='diagnostics=[\"lar\"]'\negd run --config r --set \"$ALL\" --out $OTHER\n")
    assert commands(f"text\n```bash\n{block}```\n```\negd sweep not-bash.toml\n```\n") == [
        ["egd", "run", "--config", "mod-add-p97", "--method", m, "--set", f"train.seed={s}"]
        for m in ("egd", "sgd") for s in "01"] + [
        ["egd", "sweep", "a.toml", "--workers", "2"], ["egd", "results", "x.sqlite"], ["python", "b.py"],
        ["egd", "run", "--config", "r", "--set", "diagnostics=[\"lar\"]", "--out", "$OTHER"]]


def test_the_index_links_every_experiment_and_nothing_else():
    index = (EXPERIMENTS / "README.md").read_text()
    linked = set(re.findall(r"\]\((\d\d-[a-z0-9-]+)/?\)", index))
    assert linked == {f.name for f in FOLDERS}


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md",
        ROOT / "bench" / "README.md", EXPERIMENTS / "README.md", *sorted(EXPERIMENTS.glob("*/README.md"))]


def test_every_experiments_path_in_the_docs_exists():
    named = {m for d in DOCS for m in re.findall(r"experiments/[\w./-]*[\w/]", d.read_text())}
    assert named and sorted(n for n in named if not (ROOT / n).exists()) == []


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for doc in DOCS:
        text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
        for url in re.findall(r"\]\(([^)\s]+)\)", text):
            if not url.startswith(("http://", "https://", "#")) and not (doc.parent / url.split("#")[0]).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {url}")
    assert broken == []


def test_bench_readme_lists_every_timing_script():
    readme = (ROOT / "bench" / "README.md").read_text()
    scripts = sorted(p.name for p in (ROOT / "bench").glob("*.py"))
    assert scripts and [s for s in scripts if f"[{s}]({s})" not in readme] == []
