"""config.yaml's models as admission reads them: credentials, cache-marker injection, context windows."""

from __future__ import annotations

import pytest
import yaml

from billingproxy.errors import ConfigError
from billingproxy.proxy.catalog import ModelCatalog
from testkit.support import REPO


def write(tmp_path, models: list[dict]):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": models}))
    return path


def test_every_shipped_model_declares_its_context_window():
    catalog = ModelCatalog.from_config(REPO / "config.yaml")
    assert catalog.names and all(catalog.context_window(name) for name in catalog.names)
    assert catalog.context_window("gpt-4o-mini") == 128_000


def test_the_widest_deployment_counts_and_one_without_a_window_makes_it_unknown(tmp_path):
    def entry(name: str, window: int | None) -> dict:
        info = {} if window is None else {"max_input_tokens": window}
        return {"model_name": name, "litellm_params": {"model": f"openai/{name}"}, "model_info": info}

    catalog = ModelCatalog.from_config(
        write(tmp_path, [entry("a", 8000), entry("a", 32000), entry("b", 8000), entry("b", None)])
    )
    assert catalog.context_window("a") == 32000
    assert catalog.context_window("b") is None and catalog.context_window("unknown") is None


@pytest.mark.parametrize("bad", [0, -5, "lots", 1.5, True])
def test_a_bad_context_window_stops_the_proxy_with_a_clear_error(tmp_path, bad):
    model = {"model_name": "m", "litellm_params": {"model": "openai/m"}, "model_info": {"max_input_tokens": bad}}
    with pytest.raises(ConfigError, match=r"model .m.: model_info\.max_input_tokens must be a positive integer"):
        ModelCatalog.from_config(write(tmp_path, [model]))
