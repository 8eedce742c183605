"""Official files by name against a local HTTP server: download, cache, resume, 404, truncation, corruption, offline."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
import torch

from beit3_lightning.hub import OFFICIAL_FILES, DownloadError, download, main, resolve_file

PAYLOAD = bytes(range(256)) * 4000  # 1 MB stand-in for a checkpoint


class Server:
    """Serves ``files`` by name, honouring ``Range``; ``cut`` sends only that many bytes of a full-length answer."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: int | None = None
        self.ranges: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                outer.ranges.append(self.headers.get("Range"))
                if name not in outer.files:
                    self.send_error(404, "Not Found")
                    return
                data, start = outer.files[name], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                self.wfile.write(body[: outer.cut] if outer.cut is not None else body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(monkeypatch, tmp_path: Path):
    serving = Server()
    monkeypatch.setenv("BEIT3_BASE_URL", serving.url)
    monkeypatch.setenv("BEIT3_HOME", str(tmp_path / "cache"))
    yield serving
    serving.httpd.shutdown()


def test_a_name_downloads_once_into_the_cache(server: Server, tmp_path: Path):
    server.files["beit3_base_patch16_224.pth"] = PAYLOAD
    path = download("beit3_base_patch16_224")  # without .pth
    assert path == tmp_path / "cache" / "beit3_base_patch16_224.pth" and path.read_bytes() == PAYLOAD
    assert '"size": 1024000' in (tmp_path / "cache" / "checksums.json").read_text()
    server.httpd.shutdown()  # cached: no request needed
    assert download("beit3_base_patch16_224.pth") == path
    assert resolve_file("beit3_base_patch16_224") == path


def test_an_interrupted_download_resumes_with_a_range_request(server: Server, tmp_path: Path):
    server.files["beit3.spm"] = PAYLOAD
    server.cut = 300_000
    with pytest.raises(DownloadError, match="stopped at 300000 of 1024000 bytes; run the same command again"):
        download("beit3.spm")
    assert (tmp_path / "cache" / "beit3.spm.part").stat().st_size == 300_000
    assert not (tmp_path / "cache" / "beit3.spm").exists()  # never a half file under the real name
    server.cut = None
    assert download("beit3.spm").read_bytes() == PAYLOAD
    assert server.ranges[-1] == "bytes=300000-"


def test_404_and_offline_say_what_to_do(server: Server, tmp_path: Path, monkeypatch, capsys):
    with pytest.raises(DownloadError, match=r"HTTP 404 .*put it at .*cache/beit3_large_patch16_224\.pth"):
        download("beit3_large_patch16_224")
    assert main(["beit3_large_patch16_224"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("beit3 download: error: cannot download http://127.0.0.1")
    monkeypatch.setenv("BEIT3_BASE_URL", "http://127.0.0.1:9/")  # nothing listens there
    with pytest.raises(DownloadError, match=r"http://127.0.0.1:9/beit3.spm .*offline\? .*put it at"):
        download("beit3.spm")
    with pytest.raises(DownloadError, match="not an official BEiT-3 file"):
        download("beit3_huge")


def test_a_file_differing_from_the_first_download_is_refused(server: Server, tmp_path: Path):
    server.files["beit3.spm"] = PAYLOAD
    first = download("beit3.spm")
    server.files["beit3.spm"] = PAYLOAD[:-1] + b"\x00"
    with pytest.raises(DownloadError, match="corrupt or the release changed"):
        download("beit3.spm", force=True)
    assert first.read_bytes() == PAYLOAD  # the good file stays


def test_names_reach_the_tokenizer_and_checkpoint_readers(server: Server, tmp_path: Path):
    from beit3_lightning.data.tokenizer import Beit3Tokenizer, TokenizerError, sample_tokenizer_path
    from beit3_lightning.modeling.checkpoint import CheckpointError, read_checkpoint

    server.files["beit3.spm"] = sample_tokenizer_path().read_bytes()  # a stand-in sentencepiece model
    buffer = tmp_path / "weights.pth"
    torch.save({"model": {"beit3.x": torch.ones(2)}}, buffer)
    server.files["beit3_base_patch16_224_in1k.pth"] = buffer.read_bytes()
    assert Beit3Tokenizer("beit3.spm").vocab_size == Beit3Tokenizer("sample").vocab_size
    assert torch.equal(read_checkpoint("beit3_base_patch16_224_in1k").state["beit3.x"], torch.ones(2))
    with pytest.raises(CheckpointError, match="HTTP 404"):
        read_checkpoint("beit3_large_patch16_224")
    server.files.clear()
    (tmp_path / "cache" / "beit3.spm").unlink()
    with pytest.raises(TokenizerError, match="HTTP 404"):
        Beit3Tokenizer("beit3.spm")


def test_list_shows_every_official_file(server: Server, capsys):
    server.files["beit3.spm"] = PAYLOAD
    download("beit3.spm")
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == list(OFFICIAL_FILES)
    assert "[cached]" in lines[0] and "test-dev 77.65" in next(row for row in lines if "base_patch16_480_vqa" in row)
