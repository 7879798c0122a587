"""Settings read from the environment, with pydantic-settings: the base of the operator's, the gateway's and the
agent runner's settings (``longshot.config``, ``longshot.gateway.settings``, ``longshot.agent.settings``).

Two ways to make one, on purpose:

* ``Settings(namespace="ops", metrics_port=0)``: exactly these values and the defaults, whatever the process
  environment holds (tests, benchmarks, a replica's settings built in code);
* ``Settings.from_env()`` (or ``from_env(mapping)``): the values of ``<env_prefix><FIELD>`` variables (upper-case
  field name), read by pydantic-settings' own environment source from ``os.environ`` or from the mapping given.

Every field is typed and validated; a value that does not validate is a :class:`SettingsError` naming the variable,
its value and what is wrong, e.g. ``LONGSHOT_MAX_WORKERS='many': Input should be a valid integer``. Variables with
the prefix that name no field are ignored (the prefixes overlap: ``LONGSHOT_GATEWAY_URL`` is the operator's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import AliasChoices, BeforeValidator, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

MAX_SHOWN = 200
"""Characters of a refused value shown in the error (the environment is the operator's, but bounded all the same)."""


class SettingsError(ValueError):
    """An environment variable whose value is not valid for its setting; the message names the variable."""


def _env_bool(value: object) -> object:
    # 1/0, true/false, yes/no, on/off (any case, surrounding spaces allowed); the empty string is false, as it was
    # before pydantic-settings. Anything else is refused by pydantic, naming the variable.
    if isinstance(value, str):
        value = value.strip().lower()
        return False if value == "" else value
    return value


EnvBool = Annotated[bool, BeforeValidator(_env_bool)]
"""A boolean setting as environment variables spell it."""


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class EnvSettings(BaseSettings):
    """Settings with an ``env_prefix`` (subclasses set it in ``model_config``); frozen and hashable."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The constructor takes only its arguments: the environment is read by from_env, never implicitly (no
        # .env file, no secrets directory either).
        return (init_settings,)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of ``field`` (its alias, when it has one, is the whole name)."""
        info = cls.model_fields.get(field)
        if info is not None and isinstance(info.validation_alias, str):
            return info.validation_alias
        if info is not None and isinstance(info.validation_alias, AliasChoices):
            # a standard variable read in either case (HTTPS_PROXY): its upper-case spelling
            return str(info.validation_alias.choices[-1])
        if info is None and field.upper().startswith(cls.model_config.get("env_prefix", "")):
            return field.upper()  # an alias already
        return f"{cls.model_config.get('env_prefix', '')}{field.upper()}"

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Every setting's environment variable, by field name."""
        return {name: cls.env_name(name) for name in cls.model_fields}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """The settings of ``env`` (default: the process environment); SettingsError names a variable with an
        invalid value."""
        values: dict[str, Any] = _Environment(cls, os.environ if env is None else env)()
        try:
            return cls(**values)
        except ValidationError as e:
            raise SettingsError(_explain(cls, e)) from None

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated (``dataclasses.replace`` for these settings)."""
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **changes})


def _explain(cls: type[EnvSettings], error: ValidationError) -> str:
    problems = []
    for e in error.errors(include_url=False):
        field = str(e["loc"][0]) if e["loc"] else ""
        shown = repr(e.get("input"))
        if len(shown) > MAX_SHOWN:
            shown = shown[:MAX_SHOWN] + "..."
        problems.append(f"{cls.env_name(field)}={shown}: {e['msg']}" if field else str(e["msg"]))
    return "; ".join(problems)
