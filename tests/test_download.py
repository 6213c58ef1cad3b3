"""Downloading checkpoints, tested against a local HTTP server on 127.0.0.1 (no internet needed)."""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from loraxs_mini import LoraxsError
from loraxs_mini.download import cache_dir, download, download_checkpoint
from loraxs_mini.pretrained import load_pretrained
from loraxs_mini.safetensors_file import save_file


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "source.safetensors"
    save_file({"w": torch.arange(750_000, dtype=torch.float32)}, path)  # 3 MB: several 1 MB chunks
    return path.read_bytes()


@pytest.fixture
def server(payload):
    """Serves `payload` in full at /..., or stops halfway at /half/...; records what it saw."""
    state = {"requests": [], "watch": None, "seen_mid_transfer": None}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state["requests"].append(self.path)
            if "missing" in self.path:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            half = len(payload) // 2
            self.wfile.write(payload[:half])
            self.wfile.flush()
            if state["watch"] is not None:  # look at the client's folder while the transfer is under way
                time.sleep(0.3)
                folder = state["watch"].parent
                state["seen_mid_transfer"] = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
            if "half" in self.path:
                return  # the connection closes with half the promised bytes sent
            self.wfile.write(payload[half:])

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_download_shows_progress_renames_atomically_and_caches(server, payload, tmp_path, capsys):
    destination = tmp_path / "cache" / "gpt2" / "model.safetensors"
    server["watch"] = destination
    assert download(server["url"] + "/model.safetensors", destination) == destination
    assert destination.read_bytes() == payload

    # Mid-transfer only a temporary file existed, never the final name.
    seen = server["seen_mid_transfer"]
    assert "model.safetensors" not in seen and any(".partial" in name for name in seen)
    assert sorted(p.name for p in destination.parent.iterdir()) == ["model.safetensors"]

    progress = capsys.readouterr().err
    assert "100%" in progress and "2.86M" in progress  # tqdm's bar reached the full 3,000,xxx bytes

    download(server["url"] + "/model.safetensors", destination)  # the second time, from the cache
    assert len(server["requests"]) == 1


def test_a_server_that_stops_halfway_leaves_nothing_behind(server, tmp_path):
    destination = tmp_path / "cache" / "gpt2" / "model.safetensors"
    url = server["url"] + "/half/model.safetensors"
    with pytest.raises(LoraxsError) as error:
        download(url, destination)
    message = str(error.value)
    assert url in message and str(destination) in message and "closed before the whole file" in message
    assert not destination.parent.exists()  # no partial file a later run could mistake as complete, no folder

    download(server["url"] + "/model.safetensors", destination)  # a retry starts afresh and succeeds
    assert destination.exists()


def test_http_error_names_the_status(server, tmp_path):
    with pytest.raises(LoraxsError, match="HTTP 404"):
        download(server["url"] + "/missing/model.safetensors", tmp_path / "m.safetensors")


def test_presets_download_from_the_hub_layout_into_the_cache(server, payload, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server["url"])
    path = download_checkpoint("gpt2-medium")
    assert server["requests"] == ["/openai-community/gpt2-medium/resolve/main/model.safetensors"]
    assert path == cache_dir() / "gpt2-medium" / "model.safetensors" and path.read_bytes() == payload


def test_offline_from_pretrained_is_one_clear_message(monkeypatch):
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(LoraxsError) as error:
        load_pretrained("gpt2")
    message = str(error.value)
    assert f"http://127.0.0.1:{port}/openai-community/gpt2/resolve/main/model.safetensors" in message
    assert str(cache_dir() / "gpt2" / "model.safetensors") in message
    assert "train.py --init-from FOLDER" in message  # the flag that takes the folder, by name
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_a_config_json_given_for_the_weights_is_named_as_such(tmp_path):
    (tmp_path / "config.json").write_text('{"n_layer": 2}')
    with pytest.raises(LoraxsError, match="config.json is a JSON file, not the weights: give the folder"):
        load_pretrained(tmp_path / "config.json")
