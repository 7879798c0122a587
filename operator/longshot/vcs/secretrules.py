"""The secret scan's rules: gitleaks' maintained ruleset plus a few of our own, matched in linear time.

``rules/gitleaks.toml`` is gitleaks' default configuration, vendored unchanged at a pinned release by
``hack/vendor_gitleaks.py`` (MIT, its licence is in the file's header and ``rules/LICENSE.gitleaks``);
``rules/longshot.toml`` holds our additions in the same format. Every regex is compiled with RE2 (gitleaks'
rules are Go RE2 syntax: linear in the text, whatever it holds); a rule RE2 refuses, or one without a regex
(gitleaks' path-only rules), is skipped and listed in :attr:`Ruleset.skipped`. Matching follows gitleaks' detector:

* a rule runs on a text only if one of its ``keywords`` occurs in it (case-insensitive; one RE2 set finds them
  all in one pass), and only on files its ``path`` (if any) matches;
* the secret is the rule's ``secretGroup``, else its first non-empty group, else the whole match; with an
  ``entropy`` the secret needs more Shannon entropy than that;
* allowlists, the global one and the rule's, drop a match by ``regexes`` (on the secret, or the match or line
  with ``regexTarget``), ``stopwords`` (substrings of the secret) and ``paths``; ``condition = "AND"`` needs
  every kind it lists.

Where we differ, on purpose (an agent writes the text, and would put a credential where gitleaks looks away):
the global allowlist's *paths* (lockfiles, images, ``node_modules``, ``vendor``...) exempt only the generic
rules (``generic`` in ``longshot.toml``), never a specific token format; the ``gitleaks:allow`` comment means
nothing; and a generic rule is reported on a text only when no specific rule matched it. An own rule may reuse a
gitleaks id: both patterns then report under it.
"""

from __future__ import annotations

import math
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from importlib import resources
from typing import Any, NamedTuple, cast

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused rule is counted, not logged to stderr
_TESTS = re2.Options()
_TESTS.log_errors = False
_TESTS.never_capture = True  # a yes-or-no question: RE2's DFA alone answers it, no submatch extraction


def _compile(pattern: str) -> re2._Regexp[str]:
    return re2.compile(pattern, _TESTS)


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value`` (gitleaks' measure)."""
    if not value:
        return 0.0
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _literal_set(words: list[str]) -> re2.Set | None:
    """An RE2 set of literal words: which of them occur in a (UTF-8) text, in one linear pass."""
    if not words:
        return None
    found = re2.Set.SearchSet(_OPTIONS)
    for word in words:
        found.Add(re2.escape(word.encode()))
    found.Compile()
    return found


@dataclass(frozen=True, eq=False)
class Allowlist:
    regex: re2._Regexp[bytes] | None
    """Its ``regexes`` as one alternation: one RE2 pass whatever their number (on UTF-8 bytes, like the rules)."""
    paths: tuple[re2._Regexp[str], ...]
    stopwords: re2.Set | None
    target: str
    """What the regexes look at: ``secret``, ``match`` or ``line``."""
    every: bool
    """``condition = "AND"``: every kind of check listed must allow."""

    @classmethod
    def load(cls, raw: dict[str, Any]) -> Allowlist:
        regexes = raw.get("regexes", ())
        alternation = "|".join(f"(?:{r})" for r in regexes).encode()
        return cls(re2.compile(alternation, _TESTS) if regexes else None,
                   tuple(_compile(p) for p in raw.get("paths", ())),
                   _literal_set(sorted({w.lower() for w in raw.get("stopwords", ())})),
                   raw.get("regexTarget", "secret"), raw.get("condition", "OR").upper() == "AND")

    def _path(self, path: str) -> bool:
        return any(p.search(path) for p in self.paths)

    def skips_file(self, path: str) -> bool:
        """Whether the file is exempt from the rule whatever it holds (gitleaks' commit-or-path check)."""
        if not self.paths or (self.every and (self.regex is not None or self.stopwords is not None)):
            return False
        return self._path(path)

    def allows(self, path: str, secret: bytes, match: bytes, line: Callable[[], bytes]) -> bool:
        target = match if self.target == "match" else line() if self.target == "line" else secret
        checks: list[bool] = []
        if self.every and self.paths:
            checks.append(self._path(path))
        if self.regex is not None:
            checks.append(self.regex.search(target) is not None)
        if self.stopwords is not None:
            checks.append(self.stopwords.Match(secret.lower()) is not None)
        return bool(checks) and (all(checks) if self.every else any(checks))


@dataclass(frozen=True, eq=False)
class Rule:
    id: str
    regex: re2._Regexp[bytes]
    """Run on UTF-8 bytes: encoded once per text, not once per rule."""
    keywords: tuple[str, ...]
    secret_group: int
    entropy: float
    path: re2._Regexp[str] | None
    allowlists: tuple[Allowlist, ...]
    generic: bool
    """Reported only where no specific rule matched, and not in the files the global allowlist names."""
    source: str


class Match(NamedTuple):
    rule: str
    start: int
    end: int
    """Where the secret is in the text (byte offsets)."""
    generic: bool
    rank: int
    """The rule's place in :attr:`Ruleset.rules` (of two generic rules on a line, the first is named)."""


class Ruleset:
    """Compiled rules and the keyword index that picks the few worth running on a text."""

    def __init__(self, sources: list[tuple[str, dict[str, Any]]]) -> None:
        self.skipped: dict[str, str] = {}
        """``source:id`` -> why the rule is not used."""
        rules: list[Rule] = []
        global_lists: list[Allowlist] = []
        generic: dict[str, int] = {}
        for _, config in sources:
            generic.update((rule, len(generic) + i) for i, rule in enumerate(config.get("generic", ())))
            for raw in config.get("allowlists", [config["allowlist"]] if "allowlist" in config else []):
                global_lists.append(Allowlist.load(raw))
        for source, config in sources:
            for raw in config.get("rules", ()):
                rule = self._rule(source, raw, generic)
                if rule is not None:
                    rules.append(rule)
        # the specific rules first, then the generic ones in the order they are listed (the first that matches a
        # line names it)
        self.rules = tuple(sorted(rules, key=lambda r: generic.get(r.id, -1)))
        self.allowlists = tuple(global_lists)
        self.always = tuple(i for i, r in enumerate(self.rules) if not r.keywords)
        words = sorted({k for r in self.rules for k in r.keywords})
        self._keywords = _literal_set(words)
        self._by_keyword = tuple(tuple(i for i, r in enumerate(self.rules) if w in r.keywords) for w in words)

    def _rule(self, source: str, raw: dict[str, Any], generic: dict[str, int]) -> Rule | None:
        name = f"{source}:{raw.get('id', '?')}"
        if "regex" not in raw:
            self.skipped[name] = "no regex (a rule on file names only)"
            return None
        try:
            regex = re2.compile(raw["regex"].encode(), _OPTIONS)
            path = _compile(raw["path"]) if "path" in raw else None
            allowlists = tuple(Allowlist.load(a) for a in raw.get("allowlists", ()))
        except re2.error as e:
            self.skipped[name] = f"RE2 refuses it: {e}"
            return None
        return Rule(raw["id"], regex, tuple(k.lower() for k in raw.get("keywords", ())),
                    int(raw.get("secretGroup", 0)), float(raw.get("entropy", 0.0)), path, allowlists,
                    raw["id"] in generic, source)

    def candidates(self, data: bytes) -> list[Rule]:
        """The rules whose keywords occur in ``data`` (in order: the specific ones first)."""
        return [self.rules[i] for i in self._candidates(data)]

    def _candidates(self, data: bytes) -> list[int]:
        # RE2's Set.Match gives the indices of the patterns that occur (the stubs say bool)
        hits = cast("list[int] | None", self._keywords.Match(data.lower())) if self._keywords is not None else None
        if not hits and not self.always:
            return []  # most lines of most files
        chosen = set(self.always).union(*(self._by_keyword[k] for k in hits or ()))
        return sorted(chosen)

    def find(self, path: str, data: bytes, *, first: bool = True) -> Iterator[Match]:
        """The secrets in ``data`` (a line, or a window of a file, UTF-8). With ``first``: one per rule, and the
        generic rules only until one matches, and only if no specific one did. Linear in the text for each rule
        that runs (RE2; at most every rule runs)."""
        specific = generic = False
        for rank in self._candidates(data):
            rule = self.rules[rank]
            if first and rule.generic and (specific or generic):
                break
            if rule.path is not None and not rule.path.search(path):
                continue
            if any(a.skips_file(path) for a in rule.allowlists) or (
                    rule.generic and any(a.skips_file(path) for a in self.allowlists)):
                continue
            for m in rule.regex.finditer(data):
                secret_span = _secret_span(rule, m)
                secret = data[secret_span[0]:secret_span[1]]
                if rule.entropy and shannon_entropy(secret.decode(errors="replace")) <= rule.entropy:
                    continue
                line = partial(_line_of, data, m.start(), m.end())
                if any(a.allows(path, secret, m.group(), line) for a in (*self.allowlists, *rule.allowlists)):
                    continue
                yield Match(rule.id, *secret_span, rule.generic, rank)
                specific, generic = specific or not rule.generic, generic or rule.generic
                if first:
                    break


def _secret_span(rule: Rule, m: re2._Match[bytes]) -> tuple[int, int]:
    groups = len(m.groups())
    if rule.secret_group and rule.secret_group <= groups:
        return m.span(rule.secret_group)
    for i in range(1, groups + 1):
        start, end = m.span(i)
        if end > start >= 0:
            return start, end
    return m.span()


_LINE_AROUND = 4096
"""How far from a match its line is taken (for allowlists on the line): bounded work per match in a long text."""


def _line_of(data: bytes, start: int, end: int) -> bytes:
    lo, hi = max(0, start - _LINE_AROUND), min(len(data), end + _LINE_AROUND)
    before, after = data.rfind(b"\n", lo, start), data.find(b"\n", end, hi)
    return data[lo if before < 0 else before + 1:hi if after < 0 else after]


@cache
def ruleset() -> Ruleset:
    """The vendored gitleaks rules and ours, compiled once."""
    here = resources.files("longshot.vcs") / "rules"
    return Ruleset([(name, tomllib.loads((here / f"{name}.toml").read_text(encoding="utf-8")))
                    for name in ("gitleaks", "longshot")])


def upstream() -> dict[str, str]:
    """``upstream-version`` and ``upstream-commit`` of the vendored gitleaks file (from its header)."""
    head = (resources.files("longshot.vcs") / "rules" / "gitleaks.toml").read_text(encoding="utf-8")[:2000]
    return {k.strip(): v.strip() for line in head.splitlines() if line.startswith("# upstream-")
            for k, v in [line[2:].split(":", 1)]}
