import numpy as np
import pytest
import soundfile
import torch

from data.audio import (AudioReadError, convert_audio, convert_channels, limit_peak, normalize_rms, read_audio, resample,
                        write_wav)


def sine(frequency: float, sample_rate: int, seconds: float, amplitude: float = 0.5) -> torch.Tensor:
    time = torch.arange(int(sample_rate * seconds), dtype=torch.float64) / sample_rate
    return (amplitude * torch.sin(2 * torch.pi * frequency * time)).float()[None]  # [1, T]


def peak_frequency(wav: torch.Tensor, sample_rate: int) -> float:
    spectrum = torch.fft.rfft(wav[0].double() * torch.hann_window(wav.shape[-1], dtype=torch.float64)).abs()
    return spectrum.argmax().item() * sample_rate / wav.shape[-1]


@pytest.mark.parametrize("source_rate, target_rate", [(44100, 24000), (16000, 24000), (22050, 32000)])
def test_resample_keeps_sine_frequency_and_level(source_rate, target_rate):
    wav = sine(1000.0, source_rate, seconds=1.0)
    resampled = resample(wav, source_rate, target_rate)
    assert resampled.shape[-1] == target_rate
    assert abs(peak_frequency(resampled, target_rate) - 1000.0) <= 1.0  # 1 Hz bins over one second
    middle = resampled[:, 1000:-1000]  # away from the filter's edge effects
    assert middle.pow(2).mean().sqrt().item() == pytest.approx(0.5 / 2 ** 0.5, rel=0.01)


def test_resample_removes_content_above_new_nyquist():
    wav = sine(15000.0, 48000, seconds=0.5)  # above 12 kHz, the Nyquist of 24 kHz
    assert resample(wav, 48000, 24000)[:, 200:-200].abs().max().item() < 0.01  # away from the edges


def test_write_read_round_trip_and_seek(tmp_path):
    wav = torch.rand(2, 8000) - 0.5
    path = tmp_path / "x.wav"
    write_wav(path, wav, 8000)
    loaded, sample_rate = read_audio(path)
    assert sample_rate == 8000 and loaded.dtype == torch.float32
    assert torch.allclose(loaded, wav, atol=1 / 32768)
    part, _ = read_audio(path, start_seconds=0.25, duration_seconds=0.5)
    assert torch.equal(part, loaded[:, 2000:6000])


def test_write_refuses_clipping_values(tmp_path):
    with pytest.raises(ValueError, match="peak"):
        write_wav(tmp_path / "loud.wav", torch.full((1, 10), 1.5), 8000)


def test_flac_ogg_and_mp3_are_read(tmp_path):
    wav = sine(440.0, 16000, seconds=0.5)
    for name, fmt in [("a.flac", "FLAC"), ("a.ogg", "OGG"), ("a.mp3", "MP3")]:
        soundfile.write(tmp_path / name, wav[0].numpy(), 16000, format=fmt)
        loaded, sample_rate = read_audio(tmp_path / name)
        assert sample_rate == 16000
        assert abs(peak_frequency(loaded, 16000) - 440.0) <= 2.0


def test_unreadable_file_error_names_the_path(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioReadError, match="garbage.wav"):
        read_audio(path)


def test_channel_conversion():
    stereo = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert torch.equal(convert_channels(stereo, 1), torch.tensor([[2.0, 4.0]]))
    assert torch.equal(convert_channels(stereo[:1], 2), torch.tensor([[1.0, 2.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="channels"):
        convert_channels(torch.zeros(3, 4), 2)
    converted = convert_audio(sine(500.0, 16000, 1.0).expand(2, -1), 16000, 24000, channels=1)
    assert converted.shape == (1, 24000)


def test_normalize_rms_hits_target_and_respects_peak_limit():
    wav = sine(300.0, 8000, 1.0, amplitude=0.01)
    normalized = normalize_rms(wav, target_db=-20.0)
    assert 20 * np.log10(normalized.pow(2).mean().sqrt().item()) == pytest.approx(-20.0, abs=0.01)
    spiky = torch.zeros(1, 1000)
    spiky[0, 0] = 1.0  # RMS -30 dB: scaling to -10 dB would need a peak of 10
    limited = normalize_rms(spiky, target_db=-10.0, peak_limit=0.9)
    assert limited.abs().max().item() == pytest.approx(0.9)
    silent = torch.zeros(1, 100)
    assert torch.equal(normalize_rms(silent, target_db=-20.0), silent)


def test_limit_peak_scales_loud_audio_to_the_limit_and_leaves_quiet_audio_alone():
    loud = torch.tensor([[0.5, -2.0, 1.0]])
    torch.testing.assert_close(limit_peak(loud), loud * 0.99 / 2.0)
    quiet = torch.tensor([[0.1, -0.3]])
    assert torch.equal(limit_peak(quiet), quiet)
    assert limit_peak(loud, 1.0).abs().max().item() == pytest.approx(1.0)
