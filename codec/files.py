"""How a codec directory is stored: config.json (its config dataclass as JSON) and model.safetensors (its state
dict). `Codec` and `SNACCodec` save and load through these; codec/loading.py tells the two apart by the config."""
import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_codec_files(codec: nn.Module, config, directory: str | Path) -> None:
    """Write `config` (a dataclass) and `codec`'s weights to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
    save_file({name: tensor.contiguous() for name, tensor in codec.state_dict().items()}, directory / WEIGHTS_FILE)


def load_codec_files(codec_class: type, config_class: type, directory: str | Path, device: str | torch.device
                     ) -> nn.Module:
    """`codec_class(config)` with the weights of a directory `codec_class.save` wrote, on `device`, in eval mode; a
    missing file is refused naming it."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: not a directory written by "
                                    f"{codec_class.__name__}.save")
    codec = codec_class(config_class(**json.loads((directory / CONFIG_FILE).read_text())))
    codec.load_state_dict(load_file(directory / WEIGHTS_FILE, device=str(device)))
    return codec.to(device).eval()
