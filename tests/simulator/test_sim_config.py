"""SimConfig: validation, MIMOQ_SIM_* parsing, CLI flags over the environment, latency sampling."""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

import pytest

from mimoq.core.errors import ConfigurationError
from mimoq.sim.faults import Fault, FaultKind
from mimoq.sim.sim_config import SimConfig, add_arguments, config_from_args


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MIMOQ_SIM_LATENCY_MS": "250"}, {"latency_ms": 250.0}),
        ({"MIMOQ_SIM_FAIL_RATE": "0.25", "MIMOQ_SIM_SEED": "7"}, {"fail_rate": 0.25, "seed": 7}),
        ({"MIMOQ_SIM_FAIL_STATUSES": "429, 503"}, {"fail_statuses": (429, 503)}),
        ({"MIMOQ_SIM_FAIL_STATUSES": "502 504"}, {"fail_statuses": (502, 504)}),
        ({"MIMOQ_SIM_OMIT_USAGE": "yes"}, {"omit_usage": True}),
        ({"MIMOQ_SIM_WAV_TEXT_CHUNK": "0"}, {"wav_text_chunk": False}),
        ({"MIMOQ_SIM_AUDIO_BYTES_OVERRIDE": "1000000"}, {"audio_bytes_override": 1_000_000}),
        ({"MIMOQ_SIM_AUDIO_BYTES_OVERRIDE": "none"}, {"audio_bytes_override": None}),
        ({"MIMOQ_SIM_SAMPLE_RATE": "16000"}, {"sample_rate": 16_000}),
        ({"MIMOQ_SIM_API_KEY": "sk-test"}, {"api_key": "sk-test"}),
        ({"MIMOQ_SIM_QUOTA_RETRY_AFTER": "true"}, {"quota_retry_after": True}),
        ({"MIMOQ_SIM_LATENCY_MS": "  "}, {"latency_ms": 0.0}),  # blank means unset
        ({"UNRELATED": "1"}, {}),
        (
            {"MIMOQ_SIM_FAULTS": '{"kind": "latency", "ms": 5}'},
            {"faults": (Fault(kind=FaultKind.LATENCY, ms=5),)},
        ),
        (
            {
                "MIMOQ_SIM_FAULTS": '[{"kind": "status", "match": "x"}, {"kind": "malformed_base64"}]'
            },
            {
                "faults": (
                    Fault(kind=FaultKind.STATUS, match="x"),
                    Fault(kind=FaultKind.MALFORMED_BASE64),
                )
            },
        ),
    ],
)
def test_from_env_parses_each_variable(env: dict[str, str], expected: dict[str, Any]) -> None:
    config = SimConfig.from_env(env)
    defaults = SimConfig()
    for name in vars(defaults):
        assert getattr(config, name) == expected.get(name, getattr(defaults, name)), name


@pytest.mark.parametrize(
    "env",
    [
        {"MIMOQ_SIM_LATENCY_MS": "fast"},
        {"MIMOQ_SIM_OMIT_USAGE": "maybe"},
        {"MIMOQ_SIM_FAIL_RATE": "1.5"},
        {"MIMOQ_SIM_FAIL_STATUSES": "200"},
        {"MIMOQ_SIM_SAMPLE_RATE": "0"},
        {"MIMOQ_SIM_SPEECH_SECONDS_PER_CHAR": "0"},
        {"MIMOQ_SIM_FAULTS": '{"kind": "meteor"}'},
        {"MIMOQ_SIM_FAULTS": "not json"},
    ],
)
def test_bad_environment_is_a_configuration_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        SimConfig.from_env(env)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latency_ms": -1},
        {"latency_sigma": -0.1},
        {"fail_rate": -0.01},
        {"fail_statuses": ()},
        {"audio_bytes_override": -2},
        {"max_text_chars": 0},
        {"stream_chunk_bytes": 10},
    ],
)
def test_invalid_values_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SimConfig(**kwargs)


def test_api_key_stays_out_of_repr() -> None:
    assert "sk-very-secret" not in repr(SimConfig(api_key="sk-very-secret"))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_flags_override_environment_and_keep_the_rest() -> None:
    env = {"MIMOQ_SIM_LATENCY_MS": "100", "MIMOQ_SIM_FAIL_RATE": "0.2", "MIMOQ_SIM_SEED": "3"}
    ns = _parse(["--latency-ms", "5", "--omit-usage", "--no-wav-text-chunk"])
    config = config_from_args(ns, env)
    assert config.latency_ms == 5.0  # flag beats env
    assert config.fail_rate == 0.2 and config.seed == 3  # env kept where no flag was given
    assert config.omit_usage is True and config.wav_text_chunk is False


def test_cli_defaults_are_the_config_defaults() -> None:
    assert config_from_args(_parse([]), {}) == SimConfig()


def test_flags_leave_host_and_port_to_the_command() -> None:
    """``mimoq sim`` adds --host/--port itself: add_arguments must not clash with them."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    add_arguments(parser)
    ns = parser.parse_args(["--port", "9001", "--fail-rate", "0.5"])
    assert ns.port == 9001 and config_from_args(ns, {}).fail_rate == 0.5


def test_cli_faults_flag() -> None:
    ns = _parse(["--faults", '[{"kind": "status", "status": 503, "match": "poison"}]'])
    assert config_from_args(ns, {}).faults == (
        Fault(kind=FaultKind.STATUS, status=503, match="poison"),
    )


def test_cli_refuses_a_bad_fault() -> None:
    with pytest.raises(SystemExit):
        _parse(["--faults", '{"kind": "status", "status": 99}'])


def test_cli_values_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        config_from_args(_parse(["--fail-rate", "2"]), {})


def test_fixed_latency_adds_per_char_cost() -> None:
    config = SimConfig(latency_ms=100, latency_ms_per_char=2)
    assert config.sample_latency_ms(random.Random(0), 50) == 200.0
    assert config.sample_latency_ms(random.Random(0)) == 100.0


def test_lognormal_latency_has_the_configured_median_and_is_seeded() -> None:
    config = SimConfig(latency_ms=10, latency_median_ms=800, latency_sigma=0.6)
    rng = random.Random(42)
    samples = [config.sample_latency_ms(rng) for _ in range(4001)]
    assert statistics.median(samples) == pytest.approx(810, rel=0.05)
    assert min(samples) > 10 and max(samples) > 2 * 810  # a real spread, not a constant
    again = random.Random(42)
    assert [config.sample_latency_ms(again) for _ in range(5)] == samples[:5]
