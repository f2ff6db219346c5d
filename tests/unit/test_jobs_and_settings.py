from __future__ import annotations

import pytest
from pydantic import ValidationError

from tokenwire.jobs import JobRequest
from tokenwire.settings import Settings


def test_prompt_or_messages() -> None:
    assert JobRequest(prompt="hi").chat_messages() == [{"role": "user", "content": "hi"}]
    job = JobRequest.model_validate({"messages": [{"role": "system", "content": "s"},
                                                  {"role": "user", "content": "u"}]})
    assert len(job.chat_messages()) == 2


@pytest.mark.parametrize("body", [
    {},
    {"prompt": "a", "messages": [{"role": "user", "content": "b"}]},
    {"prompt": ""},
    {"messages": []},
    {"messages": [{"role": "wizard", "content": "x"}]},
    {"prompt": "a", "max_tokens": 0},
    {"prompt": "a", "temperature": 3},
    {"prompt": "a", "buffer": "paragraph"},
    {"prompt": "a", "unknown": 1},
    {"prompt": "a", "model": "has space"},
    {"prompt": "a", "metadata": {"nested": {"no": 1}}},
    {"prompt": "a", "on_disconnect": "cancel"},
    {"prompt": "a", "on_disconnect": "cancel_after=0.5"},
    {"prompt": "a", "on_disconnect": "cancel_after=-3"},
])
def test_invalid_jobs_are_rejected(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        JobRequest.model_validate(body)


def test_on_disconnect_policies() -> None:
    assert JobRequest(prompt="a").idle_cancel_ms() is None
    assert JobRequest(prompt="a", on_disconnect="continue").idle_cancel_ms() is None
    assert JobRequest(prompt="a", on_disconnect="cancel_after=2.5").idle_cancel_ms() == 2500


def test_settings_read_prefixed_env_and_common_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/2")
    monkeypatch.setenv("TOKENWIRE_WORKER_CONCURRENCY", "7")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = Settings(_env_file=None)
    assert settings.redis_url == "redis://elsewhere:6379/2"
    assert settings.worker_concurrency == 7
    assert settings.effective_provider == "openai"
    assert "sk-test" not in repr(settings)


def test_simulated_is_the_default_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("TOKENWIRE_OPENAI_API_KEY", raising=False)
    settings = Settings(_env_file=None)
    assert settings.effective_provider == "simulated"
    assert settings.default_model_name == "simulated"


def test_blocking_reads_must_stay_below_the_socket_timeout() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, read_block_ms=10_000, redis_socket_timeout=5)


def test_the_readme_documents_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in Settings.model_fields
               if f"`TOKENWIRE_{name.upper()}`" not in readme]
    assert missing == []
