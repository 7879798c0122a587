"""The price table: what a model's tokens cost (pure).

The table is the ``prices.yaml`` key of the ConfigMap ``longshot-prices`` in the operator's namespace
(the chart renders it from ``gateway.prices``)::

    currency: USD                 # the only one: the cost metrics are in dollars (..._cost_dollars_total)
    models:                       # prices per million tokens
      gpt-4o:            {input: 2.50, output: 10.00, cacheRead: 1.25}
      "claude-sonnet-4*": {input: 3.00, output: 15.00, cacheRead: 0.30, cacheWrite: 3.75}
      "*":               {input: 1, output: 1}     # optional catch-all

A key is a model name or a glob (``*``, ``?``, ``[...]``); an exact name wins over globs, then the longest
glob. ``cacheRead`` and ``cacheWrite`` default to ``input``. A model no key matches costs 0 (the gateway
records a warning Event once per build and model).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from longshot.gateway import metering

CONFIGMAP_KEY = "prices.yaml"
PER_TOKENS = 1_000_000


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0, alias="cacheRead")
    cache_write: float | None = Field(default=None, ge=0, alias="cacheWrite")


class PriceTableSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: Literal["USD"] = "USD"
    """Prices are in US dollars: ``longshot_cost_dollars_total``, ``longshot_gateway_cost_dollars_total`` and the
    budgets' ``maxCost`` say so (convert another currency's prices before writing the table)."""
    models: dict[str, Price] = Field(default_factory=dict)


class PriceError(ValueError):
    """The price table cannot be read; the message names the key and the problem."""


@dataclass(frozen=True)
class PriceTable:
    prices: Mapping[str, Price]
    currency: str = "USD"

    @classmethod
    def parse(cls, text: str | None) -> PriceTable:
        if not text or not text.strip():
            return cls({})
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise PriceError(f"{CONFIGMAP_KEY} is not valid YAML: {e}") from None
        try:
            spec = PriceTableSpec.model_validate(data or {})
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PriceError(f"{CONFIGMAP_KEY}: {where}: {first['msg']}") from None
        return cls(dict(spec.models), spec.currency)

    def lookup(self, model: str | None) -> Price | None:
        if not model:
            return None
        if model in self.prices:
            return self.prices[model]
        globs = sorted((k for k in self.prices if any(c in k for c in "*?[")), key=len, reverse=True)
        return next((self.prices[k] for k in globs if fnmatch.fnmatchcase(model, k)), None)

    def cost(self, usage: metering.Usage) -> float | None:
        """The cost of ``usage``, or None when its model has no price."""
        price = self.lookup(usage.model)
        if price is None:
            return None
        read = price.cache_read if price.cache_read is not None else price.input
        write = price.cache_write if price.cache_write is not None else price.input
        plain = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
        total = (plain * price.input + usage.cache_read_tokens * read + usage.cache_write_tokens * write
                 + usage.output_tokens * price.output)
        return round(total / PER_TOKENS, 9)
