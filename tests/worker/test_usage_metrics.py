"""mimoq_usage_*_total: counted per tenant and model as jobs finish, tenant labels capped."""

from __future__ import annotations

import pytest

from mimoq.core.jobs import AudioOutput, SpeechJob, TranscriptionJob, parse_job
from mimoq.core.settings import Settings
from mimoq.worker import metrics, tenant_usage
from mimoq.worker.pipeline import Outcome

TTS, ASR = "mimo-v2.5-tts", "mimo-v2.5-asr"


def counted(metric: str, tenant: str, model: str) -> float:
    value = metrics.USAGE_COUNTERS[metric].labels(tenant, model)._value.get()
    return float(value)


def speech_outcome(seconds: float) -> Outcome:
    output = AudioOutput(key="k", path="p", format="wav", bytes=10, duration_s=seconds,
                         sample_rate=24_000, channels=1, bits_per_sample=16)  # fmt: skip
    return Outcome(output=output, usage={"total_tokens": 40})


def test_a_finished_job_counts_its_call_audio_characters_and_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "_tenant_labels", set())
    job = parse_job({"kind": "speech", "input": "Hello there.", "tenant": "m-alpha"})
    assert isinstance(job, SpeechJob)
    before = {m: counted(m, "m-alpha", TTS) for m in ("requests", "audio_out_s", "chars", "tokens")}
    entry = tenant_usage.succeeded_usage(job, speech_outcome(1.5))
    write = tenant_usage.usage_write(entry, Settings())
    assert write.windows == (3600, 86_400)  # no limits: the report windows
    assert counted("requests", "m-alpha", TTS) - before["requests"] == 1
    assert counted("audio_out_s", "m-alpha", TTS) - before["audio_out_s"] == 1.5
    assert counted("chars", "m-alpha", TTS) - before["chars"] == len("Hello there.")
    assert counted("tokens", "m-alpha", TTS) - before["tokens"] == 40


def test_a_long_jobs_own_record_adds_no_call_and_a_failure_counts_once() -> None:
    job = parse_job({"kind": "transcription", "file": "/x.wav", "tenant": "m-beta"})
    assert isinstance(job, TranscriptionJob)
    parent = Outcome(output=speech_outcome(9.0).output, usage={"total_tokens": 900}, calls=0)
    assert tenant_usage.succeeded_usage(job, parent).amounts == {}
    heard = Outcome(output=speech_outcome(0).output, usage=None, audio_in_s=4.0)
    amounts = tenant_usage.succeeded_usage(job, heard).amounts
    assert amounts["requests"] == 1 and amounts["audio_in_s"] == 4.0 and amounts["audio_s"] == 4.0
    failed = tenant_usage.failed_usage({"tenant": "../etc", "model": "x" * 500}, None, "speech")
    assert (failed.tenant, failed.model, dict(failed.amounts)) == (None, TTS, {"failed": 1.0})


@pytest.mark.parametrize("tenant", ["alpha\n", "-alpha", "a" * 65, 7])
def test_a_failed_job_counts_only_a_tenant_name_the_job_contract_allows(tenant: object) -> None:
    # the same rule as its result record's tenant (jobs.salvage_owner): a name with a
    # trailing newline once passed (re.match with ``$``) into a hash field and a label
    failed = tenant_usage.failed_usage({"tenant": tenant}, None, "speech")
    assert failed.tenant is None
    assert tenant_usage.failed_usage({"tenant": "alpha"}, None, "speech").tenant == "alpha"


def test_tenant_labels_are_capped_as_for_the_other_tenant_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "_tenant_labels", set())
    for i in range(metrics.MAX_TENANT_LABELS + 3):
        metrics.usage_counted(f"cap-{i}", ASR, {"requests": 1})
    assert counted("requests", metrics.OTHER_TENANTS, ASR) >= 3
    assert counted("requests", "cap-0", ASR) == 1
