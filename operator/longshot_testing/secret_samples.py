"""Realistic credentials, and realistic text that is none, for the secret scan's tests and ``make bench-secretscan``.

Every value is made up, and built from pieces so that this file itself does not look like a leak to a scanner
(ours, gitleaks, a forge's push protection). :data:`SAMPLES` are the 18 of issue 32 (the first eight got past
the hand-written rules) plus the common formats; :data:`NOT_SECRETS` are what a scan must not report.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    name: str
    path: str
    text: str
    rules: tuple[str, ...]
    """The rules the scan reports for it (one finding per rule; a multi-line sample may have several)."""


def _rand(n: int, alphabet: str = "Zk4Qp9Xv2Lm7Rt3Wb8Nc5Hd6Jf1Gs0Ya", seed: int = 7) -> str:
    """``n`` characters that look random (a fixed linear congruential walk over ``alphabet``)."""
    out, x = [], seed
    for _ in range(n):
        x = (x * 1103515245 + 12345) % 2**31
        out.append(alphabet[(x >> 16) % len(alphabet)])
    return "".join(out)


_HEX = "0123456789abcdef"
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
def _cat(*parts: str) -> str:
    """Pieces joined at run time (a scan joins adjacent literals, ``"a" + "b"``, in the text it reads)."""
    return "".join(parts)


_KEY_BODY = _cat("MIIEvQIBADANBgkq", "hkiG9w0BAQEFAASC", _rand(64, _B64 + "+/", 3))
_PRIVATE = _cat("-----BEGIN ", "PRIVATE KEY-----")
_PRIVATE_END = "-----END " + "PRIVATE KEY-----"

SAMPLES: tuple[Sample, ...] = (
    # --- the eight that got through the hand-written rules (issue 32) ---
    Sample("postgres URL password", "app/settings.py",
           _cat('DATABASE_URL = "postgres://app:', "Vq7", 'tN2xLp9@db.internal:5432/app"\n'), ("url-credentials",)),
    Sample("Stripe live key", "billing/config.py",
           'stripe.api_key = "sk_' + "live_" + _rand(24, _B64, 11) + '"\n', ("stripe-access-token",)),
    Sample("Google API key", "web/maps.js",
           'const MAPS_KEY = "AI' + "za" + "Sy" + _rand(33, _B64 + "_-", 5) + '";\n', ("gcp-api-key",)),
    Sample("40-hex GitHub classic token", "tools/release.py",
           'GITHUB_TOKEN = "' + _rand(40, _HEX, 13) + '"\n', ("generic-api-key",)),
    Sample("Django SECRET_KEY", "mysite/settings.py",
           _cat("SECRET_KEY = 'django-", "insecure-", _rand(40, _B64 + "!@#$%^&*(-_=+)", 17), "'\n"),
           ("secret-assignment",)),
    Sample("Authorization: Bearer <hex>", "clients/billing.py",
           'HEADERS = {"Authorization": "' + "Bearer " + _rand(40, _HEX, 19) + '", "Accept": "application/json"}\n',
           ("bearer-token",)),
    Sample("a key split by concatenation", "payments/client.py",
           'STRIPE_KEY = "sk_' + "live_" + '" + "' + _rand(24, _B64, 23) + '"\n', ("stripe-access-token",)),
    Sample("a .env password with # in it", ".env", "DB_HOST=db\nDB_PASSWORD=Xk9" + "#mP2$vL8@qR5!\n",
           ("env-secret-assignment",)),
    # --- the common formats ---
    Sample("AWS key pair", "deploy/credentials",
           _cat("[default]\naws_access_key_id = AK", "IA", "Z7VQ3HMXK2PLN4RT\n") +
           "aws_secret_access_key = " + _rand(40, _B64 + "/+", 29) + "\n",
           ("aws-access-token", "aws-secret-access-key")),
    Sample("GitHub ghp_ token", "ci/publish.py", 'token = "gh' + "p_" + _rand(36, _B64, 31) + '"\n', ("github-pat",)),
    Sample("Slack bot token", "bot/config.yaml",
           _cat("slack_token: xo", "xb-", "2345678901-", "3456789012345-", _rand(24, _B64, 37), "\n"),
           ("slack-bot-token",)),
    Sample("private key block", "certs/server.key",
           _PRIVATE + "\n" + _KEY_BODY + "\n" + _PRIVATE_END + "\n", ("private-key",)),
    Sample("JSON Web Token", "web/session.ts",
           "const session = 'ey" + "JhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.ey"
           + "JzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkYSJ9." + _rand(43, _B64 + "_-", 41) + "';\n", ("jwt",)),
    Sample("npm token", ".npmrc", "//registry.npmjs.org/:_authToken=np" + "m_" + _rand(36, _B64, 43) + "\n",
           ("npm-access-token",)),
    Sample("OpenAI project key", "agent/llm.py",
           'client = OpenAI(api_key="sk-' + "proj-" + _rand(74, _B64 + "_-", 47) + "T3Blbk" + "FJ"
           + _rand(74, _B64 + "_-", 53) + '")\n', ("openai-api-key",)),
    Sample("Anthropic key", "agent/claude.py",
           'ANTHROPIC_API_KEY = "sk-' + "ant-api03-" + _rand(93, _B64 + "_-", 59) + 'AA"\n', ("anthropic-api-key",)),
    Sample("GCP service-account JSON", "deploy/sa.json",
           '{\n  "type": "service_account",\n  "project_id": "shop-prod",\n'
           '  "private_key_id": "' + _rand(40, _HEX, 61) + '",\n'
           '  "private_key": "' + _PRIVATE + "\\n" + _KEY_BODY + "\\n" + _PRIVATE_END + '\\n",\n'
           '  "client_email": "deployer@shop-prod.iam.gserviceaccount.com"\n}\n', ("private-key",)),
    Sample("password in YAML", "config/database.yaml",
           "production:\n  adapter: postgresql\n  username: shop\n  password: \"" + "Tr0ub4dor" + "-7xQ!zV2kLw\"\n",
           ("secret-assignment",)),
)

NOT_SECRETS: tuple[Sample, ...] = (
    Sample("npm lockfile hashes", "package-lock.json",
           '    "node_modules/left-pad": {\n      "version": "1.3.0",\n'
           '      "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",\n'
           '      "integrity": "sha512-' + _rand(86, _B64 + "+/", 67) + '=="\n    }\n', ()),
    Sample("poetry lockfile hashes", "poetry.lock",
           '[[package]]\nname = "requests"\nfiles = [\n    {file = "requests-2.31.0.tar.gz", hash = "sha256:'
           + _rand(64, _HEX, 71) + '"},\n]\n', ()),
    Sample("Cargo lockfile checksum", "Cargo.lock",
           '[[package]]\nname = "serde"\nversion = "1.0.190"\nchecksum = "' + _rand(64, _HEX, 73) + '"\n', ()),
    Sample("UUIDs", "fixtures/users.json",
           '{"id": "3f2b8c1e-9d4a-4e7b-a1c6-5f0e2d9b8a7c", "request_id": "c0a80101-0000-4000-8000-00000000abcd"}\n',
           ()),
    Sample("git SHAs in a changelog", "CHANGELOG.md",
           "## 2.4.1\n\n- Fix the token refresh race (" + _rand(40, _HEX, 79) + ")\n"
           "- Rotate the signing key after login (commit " + _rand(12, _HEX, 83) + ")\n", ()),
    Sample("password from the environment", "app/db.py",
           'password = os.environ["DB_PASSWORD"]\ntoken = os.getenv("API_TOKEN")\n'
           "SECRET_KEY = os.environ['DJANGO_SECRET_KEY']\n", ()),
    Sample("placeholders", "config/example.yaml",
           'api_key: "xxxxxxxxxxxxxxxxxxxxxxxx"\npassword: changeme\ntoken: "<your-token>"\n'
           'secret: "${APP_SECRET}"\n', ()),
    Sample("placeholders in a dotenv", ".env.example",
           "DB_PASSWORD=changeme\nAPI_TOKEN=<your-token>\nSECRET_KEY=${SECRET_KEY}\nSTRIPE_KEY=xxxx\n", ()),
    Sample("references in code", "scripts/call.sh",
           'curl -H "Authorization: Bearer $TOKEN" https://api.example.com\n'
           'psql "postgres://app:${DB_PASSWORD}@db/app"\n', ()),
)
