"""Build the test models in a child Python process and save them every way a user might.

The child imports the model classes from a module file written into the output directory, saves
each model as a pickled module, a scripted and a traced TorchScript archive, and records its own
outputs on fixed inputs (batch 3, unlike the converter's export batch of 2, so matching them also
proves the dynamic batch axis). The test process never imports the classes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.convert_torch.nets_source import NETS_SOURCE

# kind -> (class, {input name: (shape with batch 3, numpy dtype)})
MODELS: dict[str, tuple[str, dict[str, tuple[list[int], str]]]] = {
    "mlp": ("MLP", {"x": ([3, 6], "float32")}),
    "cnn": ("SmallCNN", {"image": ([3, 3, 8, 8], "float32")}),
    "two_io": ("TwoInTwoOut", {"a": ([3, 4], "float32"), "b": ([3, 2], "float32")}),
    "embedding": ("EmbeddingBagOfWords", {"ids": ([3, 5], "int64")}),
    "data_dependent": ("DataDependent", {"x": ([3, 4], "float32")}),
    "dict_heads": ("DictHeads", {"x": ([3, 5], "float32")}),
    "mixed": ("MixedInputs", {"ids": ([3, 4], "int64"), "x": ([3, 3], "float32")}),
}

# A class defined in the training script itself: its pickle refers to ``__main__.MainMLP``.
MAIN_CLASS_SOURCE = """
import torch
from torch import nn


class MainMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x))
"""

BUILD_SCRIPT = """
import importlib, shutil, sys
from pathlib import Path
import numpy as np
import torch

out = Path(sys.argv[1])
nets_name, gone_name = sys.argv[2], sys.argv[3]
sys.path.insert(0, str(out))
nets = importlib.import_module(nets_name)
torch.manual_seed(0)
rng = np.random.default_rng(0)
MODELS = {models!r}


def arrays_for(inputs, batch):
    arrays = {{}}
    for name, (shape, dtype) in inputs.items():
        shape = [batch, *shape[1:]]
        if dtype.startswith("int"):
            arrays[name] = rng.integers(0, 12, size=shape).astype(dtype)
        else:
            arrays[name] = rng.standard_normal(shape).astype(dtype)
    return arrays


def save_all(kind, model, inputs):
    model = nets.randomize_batchnorm(model).eval()
    arrays = arrays_for(inputs, 3)
    with torch.no_grad():
        result = model(*(torch.from_numpy(a) for a in arrays.values()))
    outs = tuple(result.values()) if isinstance(result, dict) else result if isinstance(result, tuple) else (result,)
    np.savez(out / f"{{kind}}_io.npz", **{{"in_" + k: v for k, v in arrays.items()}},
             **{{f"out_{{i}}": o.numpy() for i, o in enumerate(outs)}})
    torch.save(model, out / f"{{kind}}_pickle.pt")
    torch.jit.save(torch.jit.script(model), out / f"{{kind}}_script.pt")
    example = tuple(torch.from_numpy(a) for a in arrays_for(inputs, 2).values())
    torch.jit.save(torch.jit.trace(model, example, check_trace=False, strict=False), out / f"{{kind}}_trace.pt")


for kind, (cls, inputs) in MODELS.items():
    save_all(kind, getattr(nets, cls)(), inputs)

torch.save(nets.MLP().state_dict(), out / "mlp_state_dict.pt")
# torch.save's pre-1.6 (non-zip) format, which old projects still write.
torch.save(torch.load(out / "mlp_pickle.pt", weights_only=False), out / "mlp_legacy.pt",
           _use_new_zipfile_serialization=False)
mlp = nets.MLP()
optimizer = torch.optim.SGD(mlp.parameters(), lr=0.1)
torch.save({{"epoch": 3, "model_state_dict": mlp.state_dict(), "optimizer": optimizer.state_dict()}},
           out / "mlp_checkpoint.pt")

# A pickle whose class module is not shipped beside it.
(out / "missing").mkdir()
gone = importlib.import_module(gone_name)
torch.save(gone.MLP().eval(), out / "missing" / "model.pt")

# A pickle of a class defined in __main__, with a module file beside it that defines the class.
exec({main_source!r}, globals())
MainMLP.__module__ = "__main__"
(out / "main").mkdir()
main_model = MainMLP().eval()
arrays = arrays_for({{"x": ([3, 6], "float32")}}, 3)
with torch.no_grad():
    expected = main_model(torch.from_numpy(arrays["x"])).numpy()
np.savez(out / "main" / "io.npz", in_x=arrays["x"], out_0=expected)
torch.save(main_model, out / "main" / "model.pt")
(out / "main" / "training_classes.py").write_text({main_source!r})
"""


@dataclass
class Artifacts:
    directory: Path
    nets_module: str

    def path(self, kind: str, saved_as: str) -> Path:
        return self.directory / f"{kind}_{saved_as}.pt"

    def io(self, kind: str) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """The inputs (by name) the model was run on when built, and its outputs in order."""
        return load_io(self.directory / f"{kind}_io.npz")


def load_io(path: Path) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    with np.load(path) as data:
        inputs = {k[3:]: data[k] for k in data.files if k.startswith("in_")}
        outputs = [data[f"out_{i}"] for i in range(sum(k.startswith("out_") for k in data.files))]
    return inputs, outputs


def build_artifacts(directory: Path) -> Artifacts:
    """Write the nets module (uniquely named: the converter imports it into this process) and run
    the builder in a child process."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4().hex[:8]
    nets_name, gone_name = f"tiny_torch_nets_{suffix}", f"vanished_nets_{suffix}"
    (directory / f"{nets_name}.py").write_text(NETS_SOURCE)
    (directory / f"{gone_name}.py").write_text(NETS_SOURCE)
    script = textwrap.dedent(BUILD_SCRIPT).format(models=MODELS, main_source=MAIN_CLASS_SOURCE)
    (directory / "build_models.py").write_text(script)
    subprocess.run(
        [sys.executable, str(directory / "build_models.py"), str(directory), nets_name, gone_name],
        check=True,
        timeout=600,
        cwd=directory,
    )
    (directory / f"{gone_name}.py").unlink()
    return Artifacts(directory, nets_name)
