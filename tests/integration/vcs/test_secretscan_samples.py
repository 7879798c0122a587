"""The secret scan on gitleaks' maintained ruleset: the realistic samples of issue 32 are all found, the usual
false positives are not, and the vendored ruleset loads whole (what RE2 cannot compile is counted)."""

from __future__ import annotations

import fnmatch
import subprocess
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from longshot.vcs import secretrules, secretscan
from longshot_testing.secret_samples import NOT_SECRETS, SAMPLES, Sample

ROOT = Path(__file__).resolve().parents[3]


def rules(path: str, text: str) -> list[str]:
    return sorted({f.rule for f in secretscan.scan_text(path, text)})


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_every_realistic_sample_is_found(sample: Sample) -> None:
    assert rules(sample.path, sample.text) == sorted(sample.rules)


@pytest.mark.parametrize("sample", NOT_SECRETS, ids=lambda s: s.name)
def test_what_is_no_credential_is_not_reported(sample: Sample) -> None:
    assert rules(sample.path, sample.text) == []


def test_the_merge_side_scan_finds_every_sample_in_a_commit(tmp_path: Path) -> None:
    env = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@x",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True,
                              env=env).stdout.strip()

    git("init", "-q", "-b", "main")
    git("commit", "-q", "--allow-empty", "-m", "base")
    for i, sample in enumerate((*SAMPLES, *NOT_SECRETS)):
        target = tmp_path / f"s{i:02}" / sample.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(sample.text)
    git("add", "-A")
    git("commit", "-qm", "samples")
    found: dict[str, set[str]] = {}
    for f in secretscan.scan_range(tmp_path, "main~1", "main"):
        found.setdefault(f.file.split("/", 1)[0], set()).add(f.rule)
    assert found == {f"s{i:02}": set(s.rules) for i, s in enumerate(SAMPLES)}


def test_the_vendored_ruleset_loads_and_what_is_skipped_is_counted() -> None:
    ruleset = secretrules.ruleset()
    upstream = tomllib.loads((resources.files("longshot.vcs") / "rules" / "gitleaks.toml").read_text())
    loaded = [r for r in ruleset.rules if r.source == "gitleaks"]
    # gitleaks v8.30.1: 222 rules; every regex compiles with RE2; one rule matches file names only (pkcs12-file:
    # *.p12 and *.pfx files), which a scan of text does not use
    assert len(upstream["rules"]) == len(loaded) + 1 == 222
    assert ruleset.skipped == {"gitleaks:pkcs12-file": "no regex (a rule on file names only)"}
    assert not [name for name, why in ruleset.skipped.items() if "RE2" in why]
    version = secretrules.upstream()
    assert version["upstream-version"].startswith("v8.") and len(version["upstream-commit"]) == 40
    pin = (ROOT / "hack" / "vendor_gitleaks.py").read_text()
    assert f'COMMIT = "{version["upstream-commit"]}"' in pin and f'VERSION = "{version["upstream-version"]}"' in pin


def test_a_broken_rule_is_skipped_and_named() -> None:
    ruleset = secretrules.Ruleset([("t", {"rules": [
        {"id": "lookahead", "regex": "secret(?=x)", "keywords": ["secret"]},
        {"id": "fine", "regex": "secret[0-9]{8}", "keywords": ["secret"]}]})])
    assert [r.id for r in ruleset.rules] == ["fine"]
    assert list(ruleset.skipped) == ["t:lookahead"] and "RE2" in ruleset.skipped["t:lookahead"]


def test_the_rules_ship_in_the_wheel() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    rules_dir = ROOT / "operator" / "longshot" / "vcs" / "rules"
    shipped = [p.relative_to(rules_dir.parents[1]).as_posix() for p in rules_dir.iterdir()]
    assert shipped and all(any(fnmatch.fnmatch(p, g) for g in package_data["longshot"]) for p in shipped)


def test_keywords_entropy_and_allowlists_are_honoured() -> None:
    ruleset = secretrules.ruleset()
    assert ruleset.candidates(b"x = compute(1, 2)") == []  # no keyword: no rule runs
    assert "github-pat" in {r.id for r in ruleset.candidates(b"t = GHP_")}  # keywords are case-insensitive
    assert rules("a.py", "t = 'ghp_" + "A" * 36 + "'") == []  # below the rule's entropy
    assert rules("a.py", "key = 'AKIA" + "IOSFODNN7EXAMPLE'") == []  # the rule's allowlist (AWS's example key)
    assert rules("a.py", 'api_key = "' + "x" * 24 + '"') == []  # the global allowlist (a repeated letter)


def test_the_global_path_allowlist_exempts_only_the_generic_rules() -> None:
    """Lockfiles, vendored code, images: gitleaks skips them whole; a token of a known format is still found."""
    token = next(s for s in SAMPLES if s.rules == ("github-pat",)).text
    generic = 'password = "f83kd9Qz0pLm2XvB7nR4tY6wE1"\n'
    assert rules("src/app.py", generic) == ["generic-api-key"]
    for path in ("package-lock.json", "node_modules/x/index.js", "assets/logo.png", "vendor/modules.txt"):
        assert rules(path, generic) == []
        assert rules(path, token) == ["github-pat"]


@pytest.mark.parametrize("line", [
    'KEY = "AKIA" "Z7VQ3HMXK2PLN4RT"', "key = 'AKIA' + 'Z7VQ3HMXK2PLN4RT'", '$key = "AKIA" . "Z7VQ3HMXK2PLN4RT";',
    'local key = "AKIA" .. "Z7VQ3HMXK2PLN4RT"', "key := 'AKIA' || 'Z7VQ3HMXK2PLN4RT'",
])
def test_a_credential_split_into_adjacent_literals_is_found(line: str) -> None:
    assert rules("a.py", line) == ["aws-access-token"]
    assert rules("a.py", 'f("AKIA", "Z7VQ3HMXK2PLN4RT")') == []  # two arguments are not one string


def test_a_line_names_its_most_specific_rules() -> None:
    """gitleaks' generic rule matches most assignments of a token too: it is named only when nothing else is."""
    token = next(s for s in SAMPLES if s.rules == ("github-pat",)).text.split('"')[1]
    assert rules("a.py", f"api_token = '{token}'") == ["github-pat"]
    assert rules(".env", f"GITHUB_TOKEN={token}") == ["github-pat"]
    assert rules(".env", "GITHUB_TOKEN=f83kd9Qz0pLm2XvB7nR4tY6wE1") == ["env-secret-assignment"]
