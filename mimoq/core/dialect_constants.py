"""Facts of the MiMo audio dialect that several modules (and the simulator) must agree on."""

from __future__ import annotations

from typing import Final, Literal

TTS_MODEL: Final = "mimo-v2.5-tts"
VOICEDESIGN_MODEL: Final = "mimo-v2.5-tts-voicedesign"
VOICECLONE_MODEL: Final = "mimo-v2.5-tts-voiceclone"
ASR_MODEL: Final = "mimo-v2.5-asr"

SpeechModel = Literal["mimo-v2.5-tts", "mimo-v2.5-tts-voicedesign", "mimo-v2.5-tts-voiceclone"]
TranscriptionModel = Literal["mimo-v2.5-asr"]
SPEECH_MODELS: Final = (TTS_MODEL, VOICEDESIGN_MODEL, VOICECLONE_MODEL)
ALL_MODELS: Final = (*SPEECH_MODELS, ASR_MODEL)
#: Older ids MiMo still answers by routing them to a V2.5 model. Jobs may use them; the job
#: is validated, sent and recorded as the V2.5 model, so results say what actually ran.
MODEL_ALIASES: Final = {"mimo-v2-tts": TTS_MODEL}

#: Preset voices of ``mimo-v2.5-tts``; the ids are the literal strings.
PRESET_VOICES: Final = (
    "mimo_default",
    "冰糖",
    "茉莉",
    "苏打",
    "白桦",
    "Mia",
    "Chloe",
    "Milo",
    "Dean",
)
DEFAULT_VOICE: Final = "mimo_default"

#: Spellings people and libraries use for the audio types MiMo documents (audio/wav and
#: audio/mpeg, for ASR input and voice-clone samples), mapped to the documented ones.
MIME_ALIASES: Final = {
    "audio/wav": "audio/wav",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mpeg": "audio/mpeg",
    "audio/mp3": "audio/mpeg",
    "audio/mpeg3": "audio/mpeg",
    "audio/x-mpeg": "audio/mpeg",
}
EXTENSION_MIME: Final = {".wav": "audio/wav", ".wave": "audio/wav", ".mp3": "audio/mpeg"}

#: Base64 text allowed per audio data URI. The docs say "10 MB"; 10,000,000 characters is
#: the reading that is safe whether MiMo means 10^7 or 2^20 * 10, prefix included.
MAX_AUDIO_B64_CHARS: Final = 10_000_000

#: Texts longer than this are past the safe single-call length (8K-token TTS context).
MAX_SPEECH_CHARS: Final = 2_500

#: ``pcm16`` from MiMo: 24 kHz, 16-bit signed little-endian, mono.
PCM_SAMPLE_RATE: Final = 24_000
PCM_CHANNELS: Final = 1
PCM_BITS: Final = 16

ASR_LANGUAGES: Final = ("auto", "zh", "en")
