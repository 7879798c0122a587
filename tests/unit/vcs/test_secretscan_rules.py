"""The scanner's rules for JSON Web Tokens and `.env`-style assignments, and the allow marker's switch."""

from __future__ import annotations

import pytest

from longshot.vcs import secretscan

JWT = ("eyJ" + "hbGciOiJIUzI1NiJ9" + ".eyJ" + "zdWIiOiIxMjM0NTY3ODkwIn0" + "."
       + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")


def rules(path: str, line: str, *, honour_marker: bool = True) -> list[str]:
    return [f.rule for f in secretscan.scan_line(path, 1, line, honour_marker=honour_marker)]


@pytest.mark.parametrize("line", [f"Authorization: Bearer {JWT}", f'{{"token": "{JWT}"}}', f"t={JWT}&x=1"])
def test_signed_jwts_are_found_anywhere(line: str) -> None:
    assert rules("src/client.py", line) == ["jwt"]


def test_unsigned_or_truncated_jwts_are_not_credentials() -> None:
    assert rules("a.py", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.") == []
    assert rules("a.py", "the prefix eyJ alone") == []


@pytest.mark.parametrize(("path", "line", "found"), [
    (".env", "DB_PASSWORD=hunter2hunter2", True),
    (".env.local", "export STRIPE_SECRET='sk_live_abc123'", True),
    ("config/prod.env", 'SESSION_SECRET="correct horse"', False),  # a space: not one value
    (".env", "APP_SECRET_KEY=s3cr3t # the real one", True),
    (".env", "DB_PASSWORD=", False),
    (".env", "DB_PASSWORD=${DB_PASSWORD}", False),
    (".env", "DB_PASSWORD=$DB_PASSWORD", False),
    (".env", "DB_PASSWORD=changeme", False),
    (".env", "DB_PASSWORD=<your-password>", False),
    (".env", "API_TOKEN=xxxxxxxx", False),
    (".env", "DB_HOST=db.internal", False),
    ("deploy/run.sh", "export DEPLOY_TOKEN=abc123def456", True),
    ("Dockerfile", "ENV ADMIN_PASSWORD=Sup3rS3cret", True),
    ("Dockerfile", "ENV ADMIN_PASSWORD ${ADMIN_PASSWORD}", False),
    ("src/app.py", "DB_PASSWORD=hunter2hunter2", False),  # code: the entropy rule's business
])
def test_env_style_assignments(path: str, line: str, found: bool) -> None:
    assert rules(path, line) == (["env-secret-assignment"] if found else [])


def test_the_marker_switch() -> None:
    line = f"T = '{JWT}'  # {secretscan.ALLOW_MARKER}"
    assert rules("t.py", line) == []
    assert rules("t.py", line, honour_marker=False) == ["jwt"]
    finding = secretscan.Finding("t.py", 3, "jwt", "0123456789abcdef0123")
    assert str(finding) == "t.py:3: jwt (commit 0123456789ab)" and JWT not in str(finding)
