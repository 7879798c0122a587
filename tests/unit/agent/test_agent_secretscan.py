"""The secret scanner: which lines of a diff hold credentials, reported without the values."""

from __future__ import annotations

import pytest

from longshot.vcs import secretscan

pytestmark = pytest.mark.unit

# Built from pieces so that this file itself does not trip scanners.
AWS = "AKIA" + "Z7VQ3HMXK2PLN4RT"  # not AWS's documented example key, which gitleaks allowlists
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITLAB = "glpat-" + "xYz123AbC456dEf789gHi0"
SLACK = "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
OPENAI = "sk-proj-" + "A" * 20 + "b1" * 20
ANTHROPIC = "sk-ant-api03-" + "Zz9_" * 10
PRIVATE = "-----BEGIN " + "RSA PRIVATE KEY-----"


def diff(path: str, *added: str, start: int = 1) -> str:
    body = "\n".join(f"+{line}" for line in added)
    return (f"diff --git a/{path} b/{path}\nindex 000..111 100644\n--- a/{path}\n+++ b/{path}\n"
            f"@@ -{start},0 +{start},{len(added)} @@\n{body}\n")


@pytest.mark.parametrize(("line", "rule"), [
    (f"key = '{AWS}'", "aws-access-token"),
    (f"token: {GITHUB}", "github-pat"),
    (f"GITLAB={GITLAB}", "gitlab-pat"),
    (f"slack = \"{SLACK}\"", "slack-bot-token"),
    (f"client = OpenAI(api_key='{OPENAI}')", "openai-api-key"),
    (f"ANTHROPIC_API_KEY={ANTHROPIC}", "anthropic-api-key"),
    (PRIVATE, "private-key"),
    ("aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws-secret-access-key"),
])
def test_token_rules(line, rule):
    findings = secretscan.scan_diff(diff("src/x.py", "import os", line))
    assert findings == [secretscan.Finding("src/x.py", 2, rule)]
    assert line not in str(findings[0])


def test_line_numbers_follow_the_new_side_of_each_hunk():
    text = (
        "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n"
        "@@ -10,3 +10,4 @@ def f():\n context\n-removed\n+added = 1\n+t = '" + GITHUB + "'\n context\n"
        "@@ -40 +41,2 @@\n+x = 1\n+k = '" + AWS + "'\n"
        "diff --git a/gone.py b/gone.py\n--- a/gone.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-k = '" + AWS + "'\n"
    )
    assert [str(f) for f in secretscan.scan_diff(text)] == [
        "a.py:12: github-pat", "a.py:42: aws-access-token"]


def test_removed_and_context_lines_are_not_findings():
    text = f"diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1,2 +1,1 @@\n-{AWS}\n {GITHUB}\n"
    assert secretscan.scan_diff(text) == []


def test_high_entropy_assignments():
    line = "DB_PASSWORD=f83kd9Qz0pLm2XvB7nR4tY6wE1"
    assert [f.rule for f in secretscan.scan_diff(diff(".env.production", line))] == ["env-secret-assignment"]
    assert [f.rule for f in secretscan.scan_diff(diff("config/app.yaml", "  api_key: 'f83kd9Qz0pLm2XvB7nR4tY6wE1'"))
            ] == ["generic-api-key"]
    # gitleaks' generic rule reads code too (the hand-written rule before it read config files only)
    assert [f.rule for f in secretscan.scan_diff(diff("src/app.py", line))] == ["generic-api-key"]
    # low-entropy or placeholder values are fine
    assert secretscan.scan_diff(diff("app.ini", "password=aaaaaaaaaaaaaaaaaaaaaaaa1")) == []
    assert secretscan.scan_diff(diff("app.ini", "token=${API_TOKEN_FROM_ENVIRONMENT}")) == []


def test_allow_marker_and_known_credentials():
    assert secretscan.scan_diff(diff("t.py", f"FAKE = '{AWS}'  # longshot:allow-secret")) == []
    known = "hunter2-but-longer"
    assert [f.rule for f in secretscan.scan_diff(diff("n.txt", f"pw {known}"), known=[known])] == [
        "known-credential"]


def test_scan_text_and_quoted_paths():
    assert secretscan.scan_text("k.pem", f"x\n{PRIVATE}\n") == [secretscan.Finding("k.pem", 2, "private-key")]
    text = (f'diff --git "a/my dir/f.py" "b/my dir/f.py"\n--- "a/my dir/f.py"\n+++ "b/my dir/f.py"\n'
            f"@@ -0,0 +1 @@\n+{AWS}\n")
    assert secretscan.scan_diff(text)[0].file == "my dir/f.py"


def test_entropy():
    assert secretscan.shannon_entropy("aaaa") == 0
    assert secretscan.shannon_entropy("abcd") == 2
