"""A real `autoglm serve` on 127.0.0.1 for the client tests, over a temporary plugins directory."""

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "target"


DEMO_MODEL = ROOT / "models" / "autoglm-demo"


class Server:
    def __init__(self, tmp: Path, extra_args: tuple[str, ...] = (), config: str = ""):
        self.plugins = tmp / "plugins"
        self.plugins.mkdir()
        for name in ("weather", "calculator"):
            self.add_plugin(name)
        self.config = tmp / "autoglm.toml"
        # Each server journals its tasks apart from the others' and from the user's own.
        self.config.write_text(f'cache_dir = "{TARGET / "test-component-cache"}"\ndata_dir = "{tmp / "data"}"\n{config}')
        self.binary = os.environ.get("AUTOGLM_BIN", str(TARGET / "debug" / "autoglm"))
        self.process = subprocess.Popen(
            [self.binary, "serve", "--addr", "127.0.0.1:0", "--plugins", str(self.plugins), "--config", str(self.config), *extra_args],
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stderr.readline()
        assert "http://" in line, f"no address in {line!r}"
        self.base = "http://" + line.split("http://")[1].split()[0]
        self.url = self.base + "/mcp"
        deadline = time.monotonic() + 120
        while not self.ready():
            assert time.monotonic() < deadline, "plugins never loaded"
            time.sleep(0.05)

    def stdio_args(self) -> list[str]:
        """Arguments for `autoglm mcp` over the same plugins and config."""
        return ["mcp", "--plugins", str(self.plugins), "--config", str(self.config)]

    def add_plugin(self, name: str) -> None:
        """Copy a sample plugin in atomically, as a deployment would."""
        partial = self.plugins / f"{name}.partial"
        shutil.copy(TARGET / "plugins" / f"{name}.wasm", partial)
        partial.rename(self.plugins / f"{name}.wasm")

    def add_test_plugin(self, name: str) -> None:
        """Copy in a plugin of tests/plugins (built by `just test-plugins`), atomically."""
        partial = self.plugins / f"{name}.partial"
        shutil.copy(TARGET / "test-plugins" / f"{name}.wasm", partial)
        partial.rename(self.plugins / f"{name}.wasm")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def agent_server(tmp_path):
    """`autoglm serve` with the shipped demo model answering chat completions."""
    server = Server(tmp_path, ("--model", str(DEMO_MODEL)))
    yield server
    server.stop()
