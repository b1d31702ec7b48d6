"""The README documents every knob: it cannot drift from the settings object."""

from pathlib import Path

from server.settings import Settings, _show

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands():
    head = "\n".join(README.splitlines()[:10])
    assert "make run" in head and "make test" in head


def test_every_gateway_setting_is_in_the_readme_table_with_its_default():
    for name, env, default, doc in Settings.docs():
        row = f"| `{env}` | `--{name.replace('_', '-')}` | `{_show(default)}` | {doc} |"
        assert row in README, f"README lacks or misstates {env}: expected row\n{row}"


def test_settings_come_from_flags_over_env_over_defaults():
    env = {"RERANKER_CHUNK_SIZE": "16", "RERANKER_API_KEYS": "a, b", "RERANKER_LOG_DOCUMENTS": "true"}
    settings = Settings.from_args(["--chunk-size", "8"], environ=env)
    assert settings.chunk_size == 8 and settings.api_keys == ("a", "b") and settings.log_documents is True
    assert Settings.from_args([], environ={}).listen == "0.0.0.0:50051"


def test_inconsistent_settings_are_refused_naming_them():
    import pytest

    with pytest.raises(ValueError, match="max_inflight_pairs"):
        Settings(max_documents=100, max_inflight_pairs=10)
    with pytest.raises(ValueError, match="tls_key"):
        Settings(tls_cert="cert.pem")
