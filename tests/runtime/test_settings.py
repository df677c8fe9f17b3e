"""CLI flags, environment variables and defaults resolve into one Settings value."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.settings import Settings, parse_settings


def test_defaults_are_the_documented_ones():
    settings = parse_settings(["--repository", "r"], env={})
    assert settings == Settings(repository=Path("r"))
    assert settings.port == 5000 and settings.host == "0.0.0.0"
    assert settings.max_body_bytes == 64 * 1024 * 1024
    assert settings.graph_optimization == "all" and not settings.allow_partial


def test_environment_then_flags():
    env = {
        "MODEL_REPOSITORY": "/models",
        "PORT": "8080",
        "LOG_LEVEL": "WARNING",
        "MODELPORT_MAX_QUEUE": "7",
        "MODELPORT_ALLOW_PARTIAL": "1",
        "MODELPORT_MODEL": "a,b",
    }
    settings = parse_settings([], env=env)
    assert settings.repository == Path("/models") and settings.port == 8080 and settings.log_level == "warning"
    assert settings.max_queue == 7 and settings.allow_partial and settings.models == ("a", "b")
    settings = parse_settings(["--port", "9000", "--model", "c", "--batch-delay-ms", "2.5"], env=env)
    assert settings.port == 9000 and settings.models == ("c",) and settings.batch_delay_ms == 2.5


@pytest.mark.parametrize(
    "argv",
    [[], ["--repository", "r", "--max-queue", "0"], ["--repository", "r", "--graph-optimization", "max"]],
)
def test_bad_values_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_settings(argv, env={})
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_bad_environment_value_names_the_variable(capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--repository", "r"], env={"MODELPORT_MAX_ELEMENTS": "many"})
    assert "MODELPORT_MAX_ELEMENTS='many'" in capsys.readouterr().err


def test_model_and_access_control_flags(capsys):
    argv = ["--repository", "r", "--model-control-mode", "EXPLICIT", "--load-model", "a", "--load-model", "b"]
    argv += ["--cors-origin", "https://x.example", "--auth-tokens-file", "t", "--auth-metrics"]
    settings = parse_settings(argv, env={"MODELPORT_ALLOW_UNAUTHENTICATED_ADMIN": "1"})
    assert settings.model_control_mode == "explicit" and settings.load_models == ("a", "b")
    assert settings.cors_origins == ("https://x.example",) and settings.auth_tokens_file == Path("t")
    assert settings.auth_metrics and settings.allow_unauthenticated_admin
    env = {"MODELPORT_MODEL_CONTROL_MODE": "poll", "MODELPORT_REPOSITORY_POLL_SECS": "2.5"}
    assert parse_settings(["--repository", "r"], env=env).repository_poll_secs == 2.5
    for argv, message in [
        (["--load-model", "a"], "--load-model needs --model-control-mode explicit"),
        (["--tls-cert", "c"], "--tls-cert and --tls-key go together"),
        (["--model-control-mode", "explicit", "--workers", "2"], "needs --workers 1"),
        (["--model-control-mode", "sometimes"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit):
            parse_settings(["--repository", "r", *argv], env={})
        assert message in capsys.readouterr().err
