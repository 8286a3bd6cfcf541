"""SNAC 24 kHz: codeclm's `SNACCodec` against the `snac` package's model, parity and speed on one clip.

    python -m bench.snac_parity [--seconds S] [--threads N] [--runs R]

`snac.SNAC` is built untrained with the hubertsiuzdak/snac_24khz configuration (its own init, seed 0) and
converted with interop/snac.py. On S seconds of noise: whether the codes are identical, the largest audio
difference when both decoders' noise blocks draw from the same seed, and the median of R runs of encode and of
decode for each model (same thread count, alternating).

Final line: JSON with parameters, codes_identical, max_abs_diff, {ours,snac}_{encode,decode}_s, seconds, threads.
"""

import argparse
import json
import statistics
import time
import warnings

import torch

from codec.snac import SNACCodec
from interop.snac import codec_state_from_snac, snac_config_from_kwargs

SNAC_24KHZ = dict(sampling_rate=24000, encoder_dim=48, encoder_rates=[2, 4, 8, 8], decoder_dim=1024,
                  decoder_rates=[8, 8, 4, 2], attn_window_size=None, codebook_size=4096, codebook_dim=8,
                  vq_strides=[4, 2, 1], noise=True, depthwise=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.snac_parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per model (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # snac scripts its Snake with torch.jit.script
        import snac
    torch.manual_seed(0)
    peer = snac.SNAC(**SNAC_24KHZ).eval()
    config = snac_config_from_kwargs(SNAC_24KHZ, "snac 24khz")
    ours = SNACCodec(config)
    ours.load_state_dict(codec_state_from_snac(peer.state_dict(), config, "snac 24khz"))
    ours.eval()
    wav = 0.3 * torch.randn(1, 1, round(args.seconds * config.sample_rate))

    times: dict[str, list[float]] = {}
    with torch.inference_mode():
        for _ in range(args.runs):
            for name, model in (("snac", peer), ("ours", ours)):
                start = time.perf_counter()
                codes = model.encode(wav)
                encoded = time.perf_counter()
                torch.manual_seed(1)
                audio = model.decode(codes)
                times.setdefault(f"{name}_encode_s", []).append(encoded - start)
                times.setdefault(f"{name}_decode_s", []).append(time.perf_counter() - encoded)
                if name == "snac":
                    peer_codes, peer_audio = codes, audio
    result = {
        "parameters": sum(p.numel() for p in ours.parameters()),
        "snac_parameters": sum(p.numel() for p in peer.parameters()),
        "codes_identical": all(torch.equal(a, b) for a, b in zip(codes, peer_codes)),
        "max_abs_diff": float((audio - peer_audio).abs().max()),
        **{name: round(statistics.median(values), 3) for name, values in times.items()},
        "seconds": args.seconds,
        "threads": args.threads,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
