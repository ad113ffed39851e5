"""Write the generated protobuf and gRPC modules from ``kefu_chat.proto``.

``python -m kefu.plugins.transport_grpc.generate`` (``make grpc-gen``) needs
grpcio-tools. The proto is compiled from a folder laid out as its import path
(``kefu/plugins/transport_grpc/``), so that the generated service module imports
its messages as ``kefu.plugins.transport_grpc.kefu_chat_pb2``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "kefu_chat.proto"
PACKAGE = Path("kefu", "plugins", "transport_grpc")
OUTPUTS = ("kefu_chat_pb2.py", "kefu_chat_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Compile the proto into ``out_dir``; returns the files written."""
    from grpc_tools import protoc  # grpcio-tools: kefu[dev]

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "src")
        (src / PACKAGE).mkdir(parents=True)
        shutil.copy(HERE / PROTO, src / PACKAGE / PROTO)
        build = Path(tmp, "out")
        build.mkdir()
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{src}",
                f"--python_out={build}",
                f"--grpc_python_out={build}",
                str(PACKAGE / PROTO),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in OUTPUTS:
            target = out_dir / name
            shutil.copy(build / PACKAGE / name, target)
            written.append(target)
        return written


def main() -> int:
    for path in generate(HERE):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
