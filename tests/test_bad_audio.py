"""Bad audio in a dataset: each file is resampled, mixed down, padded or skipped, counted and reported by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import SHARED_DATA

from mmcontrast.data.audio import (
    FSDD_PATTERN,
    MIN_SECONDS,
    AudioDecodeError,
    DecodedAudio,
    audio_folder,
    load_audio,
    speakers,
    split_by_take,
)
from mmcontrast.modalities.audio import AudioEncoder

RATE = 8000
FSDD = SHARED_DATA / "fsdd" / "recordings"


def _speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


def _good_wav(folder: Path, name: str, seed: int) -> Path:
    """A real FSDD recording copied under ``name`` when the shared data is here, else a synthetic 8 kHz clip."""
    source = FSDD / f"{seed}_jackson_{seed}.wav"
    if source.is_file():
        shutil.copy(source, folder / name)
    else:
        soundfile.write(folder / name, _speech_like(0.5, RATE, seed), RATE, subtype="PCM_16")
    return folder / name


def _write_m4a(path: Path, samples: np.ndarray, rate: int) -> None:
    """AAC in an MP4 container, which only PyAV (FFmpeg) decodes here."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((samples[None] * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.fixture()
def bad_folder(tmp_path) -> Path:
    """An FSDD-named folder: three good clips and one of each kind of bad file."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    for i in range(3):
        _good_wav(folder, f"{i}_good_{i}.wav", i)
    (folder / "3_empty_0.wav").write_bytes(b"")
    whole = _good_wav(folder, "4_cut_0.wav", 4).read_bytes()
    (folder / "4_cut_0.wav").write_bytes(whole[: len(whole) // 2])  # truncated in the samples
    (folder / "4_header_1.wav").write_bytes(whole[:30])  # truncated inside the header
    (folder / "5_text_0.wav").write_text("this is not a wav file\n")
    stereo = np.stack([_speech_like(0.5, RATE, 5), -0.5 * _speech_like(0.5, RATE, 6)], axis=1)
    soundfile.write(folder / "6_stereo_0.wav", stereo, RATE, subtype="PCM_24")
    soundfile.write(folder / "7_fast_0.wav", _speech_like(0.5, 44100, 7), 44100, subtype="PCM_16")
    soundfile.write(folder / "8_short_0.wav", _speech_like(0.05, RATE, 8), RATE, subtype="PCM_16")
    soundfile.write(folder / "9_tiny_0.wav", _speech_like(0.005, RATE, 9), RATE, subtype="PCM_16")
    nan = _speech_like(0.5, RATE, 1)
    nan[100] = np.nan
    soundfile.write(folder / "9_nan_1.wav", nan, RATE, subtype="FLOAT")
    return folder


SKIPPED = {
    "3_empty_0.wav": "empty file",
    "4_cut_0.wav": "truncated wav",
    "4_header_1.wav": "not audio that soundfile or PyAV can decode",
    "5_text_0.wav": "not audio that soundfile or PyAV can decode",
    "9_tiny_0.wav": "shorter than the minimum",
    "9_nan_1.wav": "NaN",
}


def test_bad_files_are_skipped_counted_and_reported_by_name(bad_folder):
    with pytest.warns(UserWarning, match="skipped 6 unusable audio file"):
        rows = audio_folder(bad_folder, pattern=FSDD_PATTERN, sample_rate=RATE)
    skipped = {Path(path).name: reason for path, reason in rows.skipped}
    assert set(skipped) == set(SKIPPED)
    for name, words in SKIPPED.items():
        assert words in skipped[name], (name, skipped[name])
    kept = sorted(Path(row["audio"]).name for row in rows.rows)
    assert kept == ["0_good_0.wav", "1_good_1.wav", "2_good_2.wav", "6_stereo_0.wav", "7_fast_0.wav", "8_short_0.wav"]
    report = rows.report()
    assert report.startswith("6 audio clips kept, 6 skipped")
    for name in SKIPPED:
        assert str(bad_folder / name) in report
    assert [(Path(p).name, r) for p, r in rows.resampled] == [("7_fast_0.wav", 44100)]
    assert [(Path(p).name, c) for p, c in rows.mixed_down] == [("6_stereo_0.wav", 2)]
    assert "1 resampled to 8000 Hz (from [44100] Hz)" in report and "1 mixed down to mono" in report
    assert f"minimum {MIN_SECONDS:g} s" in skipped["9_tiny_0.wav"]


def test_kept_files_are_resampled_mixed_down_and_padded(bad_folder):
    with pytest.warns(UserWarning):
        rows = audio_folder(bad_folder, pattern=FSDD_PATTERN, sample_rate=RATE)
    by_name = {Path(row["audio"]).name: i for i, row in enumerate(rows.rows)}
    decoded = DecodedAudio(rows)
    fast = decoded[by_name["7_fast_0.wav"]]
    assert fast["sample_rate"] == RATE and fast["audio"].shape == (4000,)  # 0.5 s of 44.1 kHz at 8 kHz
    stereo = decoded[by_name["6_stereo_0.wav"]]["audio"]
    expected = (_speech_like(0.5, RATE, 5) - 0.5 * _speech_like(0.5, RATE, 6)) / 2
    assert stereo.shape == (4000,) and np.allclose(stereo.numpy(), expected, atol=1e-5)  # 24-bit, mixed down
    short = decoded[by_name["8_short_0.wav"]]["audio"]
    assert short.shape == (400,)
    encoder = AudioEncoder("cpc", sample_rate=RATE, width=8)
    batch = encoder.preprocess([short])
    assert batch["input_values"].shape == (1, 400) and encoder.frame_lengths(batch["lengths"]).tolist() == [2]
    assert rows.rows[by_name["0_good_0.wav"]]["label"] == 0 and rows.classes == [str(i) for i in range(10)]


def test_a_whole_pass_over_a_bad_folder_does_not_crash(bad_folder):
    with pytest.warns(UserWarning):
        rows = audio_folder(bad_folder, pattern=FSDD_PATTERN, sample_rate=RATE)
    encoder = AudioEncoder("cpc", sample_rate=RATE, width=8).eval()

    def collate(items):
        return encoder.preprocess([item["audio"] for item in items], max_samples=RATE // 2)

    loader = torch.utils.data.DataLoader(DecodedAudio(rows), batch_size=4, num_workers=2, collate_fn=collate)
    with torch.no_grad():
        embeddings = torch.cat([encoder.embed(b["input_values"], b["attention_mask"]) for b in loader])
    assert embeddings.shape == (len(rows.rows), 8) and torch.isfinite(embeddings).all()
    train, test = split_by_take(rows, test_takes=[0])
    assert sorted(Path(r["audio"]).name for r in train.rows) == ["1_good_1.wav", "2_good_2.wav"]
    assert len(test.rows) == 4 and test.skipped == rows.skipped
    assert len(split_by_take(rows)[1].rows) == 6  # FSDD's usual test split: takes 0-4


def test_metadata_table_with_missing_and_ffmpeg_only_files(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    _good_wav(folder, "a.wav", 0)
    soundfile.write(folder / "b.flac", _speech_like(0.4, 16000, 1), 16000)
    _write_m4a(folder / "c.m4a", _speech_like(0.5, 16000, 2), 16000)
    (folder / "d.wav").write_bytes(b"RIFF\x00\x00")
    (folder / "metadata.csv").write_text(
        "file_name,label,speaker\na.wav,yes,ann\nb.flac,no,bob\nc.m4a,yes,ann\nd.wav,no,bob\nmissing.wav,no,ann\n"
    )
    with pytest.warns(UserWarning, match="skipped 2"):
        rows = audio_folder(folder, sample_rate=RATE)
    assert {Path(p).name for p, _ in rows.skipped} == {"d.wav", "missing.wav"}
    assert "does not exist" in dict(rows.skipped)[str(folder / "missing.wav")]
    assert rows.classes == ["no", "yes"] and [r["speaker"] for r in rows.rows] == ["ann", "bob", "ann"]
    m4a = DecodedAudio(rows)[2]["audio"]
    assert 0 <= m4a.shape[0] - RATE // 2 <= 1024  # AAC adds priming and pads its last frame (2048 samples at 16 kHz)
    flac = DecodedAudio(rows)[1]["audio"]
    assert flac.shape == (3200,)


def test_class_subfolders_skip_bad_files_and_truncated_flac(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        _good_wav(tmp_path / name, "ok.wav", 1)
    soundfile.write(tmp_path / "dog" / "whole.flac", _speech_like(1.0, 16000, 3), 16000)
    data = (tmp_path / "dog" / "whole.flac").read_bytes()
    (tmp_path / "dog" / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="cut.flac"):
        rows = audio_folder(tmp_path, sample_rate=RATE)
    assert rows.classes == ["cat", "dog"] and [r["label"] for r in rows.rows] == [0, 1, 1]
    assert [Path(p).name for p, _ in rows.skipped] == ["cut.flac"]


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.wav"):
        load_audio(tmp_path / "nowhere.wav")
    (tmp_path / "x.wav").write_text("hello")
    with pytest.raises(AudioDecodeError, match=r"x\.wav.*convert it to wav or flac"):
        load_audio(tmp_path / "x.wav")


def test_an_all_bad_folder_is_an_error_that_lists_the_files(tmp_path):
    (tmp_path / "0_a_0.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"(?s)no usable audio among 1 file.*0_a_0.wav"), pytest.warns(UserWarning):
        audio_folder(tmp_path, pattern=FSDD_PATTERN)


def test_the_real_fsdd_and_librispeech_folders_load_whole():
    if not FSDD.is_dir():
        pytest.skip(f"FSDD recordings not found at {FSDD}")
    rows = audio_folder(FSDD, pattern=FSDD_PATTERN, sample_rate=RATE)
    assert (rows.skipped, rows.resampled, rows.mixed_down) == ([], [], [])
    assert len(rows.rows) == 500 * len(speakers(rows)) and "george" in speakers(rows)  # 10 digits x 50 takes each
    train, test = split_by_take(rows)
    assert len(test.rows) == len(rows.rows) // 10 and all(row["take"] < 5 for row in test.rows)
    assert len(train.rows) + len(test.rows) == len(rows.rows)
    librispeech = SHARED_DATA / "librispeech-mini" / "test_db"
    if librispeech.is_dir():
        pattern = r"(?P<speaker>\d+)-(?P<chapter>\d+)-(?P<utterance>\d+)\.flac"
        speech = audio_folder(librispeech, pattern=pattern, sample_rate=16000)
        assert speech.rows and not speech.skipped and all(row["speaker"] for row in speech.rows)
        waveform = DecodedAudio(speech)[0]["audio"]
        assert waveform.ndim == 1 and waveform.shape[0] > 16000
