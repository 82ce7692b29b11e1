"""read_token_data: token ids from tensors and files, never running code in them; one line per problem."""
import json
import os
import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import save_file

from devinterp.tasks import read_token_data
from devinterp.tasks.token_data import TokenDataError

ROWS = torch.arange(40).view(10, 4) % 7


class RunsCode:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def save_dataset_dir(path, columns):
    """What datasets.Dataset.save_to_disk writes: an Arrow stream file and state.json naming it."""
    path.mkdir()
    table = pa.table(columns)
    with pa.OSFile(str(path / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))


def test_every_format_gives_the_same_rows(tmp_path):
    labels = ROWS.clone()
    labels[:, 0] = -100
    np.save(tmp_path / "a.npy", ROWS.numpy())
    np.savez(tmp_path / "b.npz", input_ids=ROWS.numpy(), labels=labels.numpy())
    save_file({"input_ids": ROWS, "labels": labels}, tmp_path / "c.safetensors")
    torch.save({"input_ids": ROWS}, tmp_path / "d.pt")
    save_dataset_dir(tmp_path / "e", {"input_ids": ROWS.tolist(), "labels": labels.tolist()})
    for source in (ROWS, ROWS.numpy(), tmp_path / "a.npy", str(tmp_path / "d.pt"), (ROWS, None)):
        data = read_token_data(source)
        assert torch.equal(data.inputs, ROWS) and data.labels is None and data.inputs.dtype == torch.long
    for source in (tmp_path / "b.npz", tmp_path / "c.safetensors", tmp_path / "e"):
        data = read_token_data(source)
        assert torch.equal(data.inputs, ROWS) and torch.equal(data.labels, labels), source
    stream = read_token_data(torch.arange(10), seq_len=3)
    assert stream.inputs.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    ragged = read_token_data([[1, 2, 3], [4, 5], [6, 7, 8, 9]], seq_len=3)
    assert ragged.inputs.tolist() == [[1, 2, 3], [6, 7, 8]]
    assert read_token_data(ROWS, labels=torch.zeros(10)).labels.shape == (10,)


def test_bad_data_is_one_line_naming_it_and_no_pickle_runs(tmp_path):
    marker = tmp_path / "pwned"
    np.save(tmp_path / "objects.npy", np.array([RunsCode(marker)], dtype=object), allow_pickle=True)
    torch.save({"input_ids": RunsCode(marker)}, tmp_path / "code.pt")
    (tmp_path / "code.bin").write_bytes(pickle.dumps(RunsCode(marker)))
    (tmp_path / "x.csv").write_text("1,2\n")
    cases = [(tmp_path / "objects.npy", "cannot be read"), (tmp_path / "code.pt", "cannot be read"),
             (tmp_path / "code.bin", "cannot be read"), (tmp_path / "x.csv", "unknown format '.csv'"),
             (tmp_path / "missing.npy", "no such file"), (torch.arange(10), "give seq_len"),
             (torch.tensor([[1, -2]]), "negative token id -2"), ([[1, 2], [3]], "rows of different lengths")]
    for source, words in cases:
        with pytest.raises(TokenDataError) as error:
            read_token_data(source)
        message = str(error.value)
        assert words in message and len(message.splitlines()) == 1, message
        if not isinstance(source, (torch.Tensor, list)):
            assert str(source) in message, message
    with pytest.raises(TokenDataError, match="3 rows of labels for 10 rows"):
        read_token_data(ROWS, labels=torch.zeros(3))
    assert not marker.exists()
