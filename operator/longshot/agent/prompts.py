"""Prompt templates: Jinja2 files shipped in ``longshot/agent/prompts/*.j2``, each overridable by a
same-named file in the prompts directory (a mounted ConfigMap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from longshot.agent import errors, gitops

PACKAGED = Path(__file__).parent / "prompts"
SYSTEM = "system.j2"


def environment(override_dir: Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if override_dir is not None and override_dir.is_dir():
        loaders.append(jinja2.FileSystemLoader(str(override_dir)))
    loaders.append(jinja2.FileSystemLoader(str(PACKAGED)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
    )
    env.filters["sanitize_url"] = gitops.sanitize_url
    return env


def render(name: str, override_dir: Path | None, **context: Any) -> str:
    """Render template ``name`` (e.g. ``worker.j2``); errors name the template and what is wrong."""
    env = environment(override_dir)
    try:
        return env.get_template(name).render(**context).strip() + "\n"
    except jinja2.TemplateNotFound:
        raise errors.ConfigError(f"prompt template {name} not found (packaged or in {override_dir})") from None
    except jinja2.TemplateError as e:
        lineno = getattr(e, "lineno", None)
        where = f" line {lineno}" if lineno else ""
        raise errors.ConfigError(f"prompt template {name}{where} cannot be rendered: {e.message}") from None


def render_persona(source: str, override_dir: Path | None, **context: Any) -> str:
    """Render a persona's prompt template (``spec.agent.personas[].prompt``) with the role's context."""
    env = environment(override_dir)
    try:
        return env.from_string(source).render(**context).strip() + "\n"
    except jinja2.TemplateError as e:
        lineno = getattr(e, "lineno", None)
        where = f" line {lineno}" if lineno else ""
        raise errors.ConfigError(f"the persona's prompt template{where} cannot be rendered: {e.message}") from None


def role_prompts(role: str, override_dir: Path | None, *, template: str | None = None, persona: str | None = None,
                 **context: Any) -> tuple[str, str]:
    """``(system prompt, task prompt)`` of a role; ``template`` names another task prompt (``judge``); ``persona``,
    the persona's prompt template, is rendered with the same context and put at the head of the system prompt."""
    context.setdefault("role", role)
    context.setdefault("mode", template or role)
    context.setdefault("skills", [])  # the build's skills in the checkout (longshot.agent.skills): none
    context.setdefault("agents_md", False)
    system = render(SYSTEM, override_dir, **context)
    if persona:
        system = render_persona(persona, override_dir, **context) + "\n" + system
    return system, render(f"{template or role}.j2", override_dir, **context)
